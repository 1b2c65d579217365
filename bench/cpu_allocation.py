"""Training steps of airbench_cifar on the CPU with and without transparent huge pages for PyTorch's allocations.

PyTorch's CPU allocator returns each large tensor to the system when it is freed, so every step faults its
activations' pages in again (135,000 minor faults a second during a cifar10-fast epoch here, half the CPU time in
the kernel). ``THP_MEM_ALLOC_ENABLE=1`` (read by c10 at the first large allocation) asks for 2 MB pages on
allocations of 2 MB and more, where the kernel's transparent huge pages are on ``madvise``, as on this machine.
Each side runs in a fresh process (the variable is read once), sides alternating, and reports steps per second,
minor faults per step and the share of CPU time spent in the kernel.

Run alone, from the repository root:  .venv/bin/python bench/cpu_allocation.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from common import alternate, machine

STEP_SCRIPT = r"""
import json, resource, sys, time
import torch, timm
import kagglecv.nn.small_nets  # noqa: F401  (registers airbench_cifar)
batch, steps = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
model = timm.create_model("airbench_cifar").to(memory_format=torch.channels_last)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
images = torch.randn(batch, 3, 32, 32).to(memory_format=torch.channels_last)
labels = torch.randint(0, 10, (batch,))
def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
for _ in range(3):
    step()
before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(steps):
    step()
seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
print(json.dumps({"steps_per_s": steps / seconds, "faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
                  "kernel_share": (after.ru_stime - before.ru_stime) / cpu}))
"""


def side(thp: bool, batch: int, steps: int, results: list[dict]):
    def run() -> float:
        env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1" if thp else "0"}
        out = subprocess.run([sys.executable, "-c", STEP_SCRIPT, str(batch), str(steps)], env=env, check=True,
                             capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        return results[-1]["steps_per_s"]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    details: dict[str, list[dict]] = {"default": [], "thp": []}
    rates = alternate({"default": side(False, args.batch, args.steps, details["default"]),
                       "thp": side(True, args.batch, args.steps, details["thp"])}, args.rounds)
    report = {"machine": machine(), "batch": args.batch, "steps": args.steps,
              **{name: {"steps_per_s": rates[name], "runs": details[name]} for name in details},
              "speedup": rates["thp"]["median"] / rates["default"]["median"]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
