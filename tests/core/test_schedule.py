import json

import pytest

import meancache_kernels as mck
from meancache_kernels import Schedule


def test_from_official_qwen_b10():
    steps = [0, 1, 3, 7, 14, 21, 28, 35, 42, 49]
    ks = [0, 2, 1, 1, 1, 1, 1, 1, 4]
    s = Schedule.from_official(steps, ks, 50)
    assert s.num_steps == 50 and s.budget == 10 and s.speedup == 5.0
    assert s.compute_steps == steps
    assert s.spans[2] == 2 and s.spans[4] == 1 and s.spans[43] == 4 and s.spans[48] == 4
    assert s.spans[0] == 0 and s.spans[49] == 0
    assert s.k_max == 4
    assert s.to_official() == (steps, ks)


def test_final_interval_to_n():
    s = Schedule.from_official([0, 3], [1, 2], 6)
    assert s.compute == (True, False, False, True, False, False)
    assert s.spans == (0, 1, 1, 0, 2, 2)
    assert s.to_official() == ([0, 3], [1, 2])
    with pytest.raises(ValueError, match="final interval"):
        Schedule.from_official([0, 3], [1], 6)


def test_chain_interval_k_has_no_effect():
    a = Schedule.from_official([0, 1, 3], [5, 2], 4)
    b = Schedule.from_official([0, 1, 3], [0, 2], 4)
    assert a == b
    assert a.to_official() == ([0, 1, 3], [0, 2])


def test_json_round_trip(tmp_path):
    s = mck.presets.get("z-image", 15)
    t = Schedule.from_json(s.to_json())
    assert t == s and t.meta == s.meta
    p = tmp_path / "s.json"
    s.to_json(p)
    assert Schedule.from_json(p) == s
    assert json.loads(p.read_text())["format"] == "meancache-schedule"


def test_full_and_uniform():
    assert Schedule.full(7).budget == 7 and Schedule.full(7).k_max == 0
    u = Schedule.from_compute_steps([0, 4, 8], 10, span=3)
    assert u.spans == (0, 3, 3, 3, 0, 3, 3, 3, 0, 3)
    assert u.skipped_steps == [1, 2, 3, 5, 6, 7, 9]


def test_mixed_spans_not_expressible_officially():
    s = Schedule([True, False, False, True], [0, 1, 2, 0])
    with pytest.raises(ValueError, match="several spans"):
        s.to_official()
    assert "spans=" in repr(s)


@pytest.mark.parametrize(
    "args,exc,match",
    [
        (([False, True], [1, 0]), ValueError, "compute\\[0\\] must be True"),
        (([True, False], [0, 0]), ValueError, "spans\\[1\\]=0 .*K >= 1"),
        (([True, False], [0, -1]), ValueError, "spans\\[1\\]=-1"),
        (([True, True], [0, 2]), ValueError, "computed steps take span 0"),
        (([True, False], [0]), ValueError, "len\\(spans\\)=1 != len\\(compute\\)=2"),
        (([],), ValueError, "at least one step"),
        (("TF",), TypeError, "compute must be a sequence"),
        (([True, 2],), TypeError, "compute\\[1\\] must be a bool"),
        (([True, False], [0, 1.5]), TypeError, "spans\\[1\\] must be an integer"),
    ],
)
def test_schedule_validation(args, exc, match):
    with pytest.raises(exc, match=match):
        Schedule(*args)


@pytest.mark.parametrize(
    "steps,ks,n,match",
    [
        ([1, 3], [1], 5, "must start at 0"),
        ([0, 3, 3], [1, 0], 5, "strictly increasing"),
        ([0, 5], [1], 5, "out of range"),
        ([0, 3], [0, 1], 5, "spans\\[0\\]=0 but interval 0->3"),
        ([0, 3], [1, 1, 1], 5, "spans must have"),
        ([0, 1], [-1], 2, "spans\\[0\\]=-1 must be >= 0"),
        ([], [], 5, "must not be empty"),
    ],
)
def test_from_official_validation(steps, ks, n, match):
    with pytest.raises(ValueError, match=match):
        Schedule.from_official(steps, ks, n)


def test_from_dict_errors():
    with pytest.raises(ValueError, match="not a MeanCache schedule"):
        Schedule.from_dict({"format": "other"})
    d = Schedule.full(3).to_dict()
    d["version"] = 99
    with pytest.raises(ValueError, match="unsupported schedule format version"):
        Schedule.from_dict(d)
    d = Schedule.full(3).to_dict()
    d["num_steps"] = 4
    with pytest.raises(ValueError, match="num_steps=4 but compute has 3"):
        Schedule.from_dict(d)
    with pytest.raises(ValueError, match="not valid JSON"):
        Schedule.from_json("{not json")


def test_immutable_and_hashable():
    s = Schedule.full(3)
    with pytest.raises(AttributeError):
        s.compute = (True,)
    assert len({s, Schedule.full(3)}) == 1


def test_from_json_and_dict_type_errors():
    with pytest.raises(TypeError, match="text_or_path must be JSON text or a file path"):
        Schedule.from_json(123)
    base = {"format": "meancache-schedule", "version": 1, "spans": [0, 1]}
    with pytest.raises(TypeError, match="num_steps must be an integer"):
        Schedule.from_dict({**base, "num_steps": "2", "compute": [1, 0]})
    with pytest.raises(TypeError, match="compute must be a sequence"):
        Schedule.from_dict({**base, "num_steps": 2, "compute": 5})
