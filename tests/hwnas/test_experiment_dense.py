"""``[data] task`` in an experiment file: a dense task reaches every stage's EvalConfig; what cannot run is refused."""

import pytest

from hwnas.experiment import ExperimentConfig, ExperimentError, eval_config

BASE = {"name": "seg", "search": {"target_ms": 5.0, "latency": "measured"}, "netadapt": {"enabled": False}}


def test_a_dense_task_reaches_the_stages_eval_config():
    cfg = ExperimentConfig.from_dict({**BASE, "data": {"task": "segmentation", "dense": {"reduced_tail": True}}})
    ev = eval_config(cfg, 100, {})
    assert ev.task == "segmentation" and ev.dense == {"reduced_tail": True}
    assert eval_config(ExperimentConfig.from_dict(BASE), 100, {}).task == "classification"


@pytest.mark.parametrize("changes,message", [
    ({"data": {"task": "depth"}}, r"\[data\] --task must be one of"),
    ({"data": {"task": "segmentation", "dense": {"head": "ssdlite"}}}, "not a segmentation head"),
    ({"data": {"task": "segmentation", "dense": "lraspp"}}, r"\[data\] dense must be a table"),
    ({"data": {"task": "detection"}, "search": {"target_ms": 5.0}}, r"\[search\] latency = \"predicted\""),
    ({"data": {"task": "detection"}, "netadapt": {"enabled": True, "reduction": 0.2}},
     r"\[netadapt\] enabled must be false"),
])
def test_dense_experiments_that_cannot_run_are_refused(changes, message):
    with pytest.raises(ExperimentError, match=message):
        ExperimentConfig.from_dict({**BASE, **changes}, "x.toml")
