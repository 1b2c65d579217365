"""Every name ``kagglecv`` exports resolves: ``import kagglecv; kagglecv.load_train`` is what the README promises."""

import kagglecv


def test_every_public_name_resolves_to_an_object_of_that_name():
    assert kagglecv.__all__, "the package exports names"
    for name in kagglecv.__all__:
        value = getattr(kagglecv, name)
        assert getattr(value, "__name__", name) == name, name
