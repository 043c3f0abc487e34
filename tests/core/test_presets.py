import pytest

import meancache_kernels as mck


def test_available():
    av = mck.presets.available()
    assert av == {"qwen-image": [10, 17, 25], "qwen-image-2512": [10, 17, 25], "z-image": [13, 15, 17, 20, 25]}


@pytest.mark.parametrize("model,budget", [(m, b) for m, bs in mck.presets.available().items() for b in bs])
def test_presets_are_valid_schedules(model, budget):
    s = mck.presets.get(model, budget)
    assert s.num_steps == 50
    assert s.budget == budget
    assert s.compute[0] and s.compute[49]  # every published table computes the first and the last step
    assert 1 <= s.k_max <= 6
    assert "UnicomAI/MeanCache" in s.meta["source"]
    steps, ks = s.to_official()
    assert len(ks) == budget - 1
    # the published K per interval is kept where the interval skips a step
    for (a, b), k_pub, k in zip(zip(steps, steps[1:]), s.meta["official_spans"], ks):
        assert k == (k_pub if b - a > 1 else 0)


def test_published_qwen_b10_table():
    s = mck.presets.get("Qwen-Image", 10)
    assert s.to_official() == ([0, 1, 3, 7, 14, 21, 28, 35, 42, 49], [0, 2, 1, 1, 1, 1, 1, 1, 4])


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset model 'flux'.*available"):
        mck.presets.get("flux", 10)
    with pytest.raises(ValueError, match="no published 'z-image' preset for budget=10"):
        mck.presets.get("z-image", 10)
    with pytest.raises(TypeError, match="budget must be an int"):
        mck.presets.get("z-image", "10")
