"""timm model creation where no hub can be reached: a Kaggle notebook without internet, this machine."""

import os
import subprocess
import sys


def test_pretrained_weights_that_cannot_be_fetched_say_what_kagglecv_offers_instead():
    code = ("from kagglecv.core.config import ModelConfig\n"
            "from kagglecv.core.errors import ConfigError\n"
            "from kagglecv.nn.models import create_model\n"
            "try:\n"
            "    create_model(ModelConfig(name='resnet10t', pretrained=True), 3)\n"
            "except ConfigError as exc:\n"
            "    print(exc)\n")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": os.devnull + "-none"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "model.pretrained: true: resnet10t's pretrained weights could not be fetched" in result.stdout
    assert "--set model.pretrained=false" in result.stdout and "Traceback" not in result.stderr
