"""NetAdapt does not refine dense networks yet: ``--task segmentation|detection`` and a spec with a dense head are
refused in one line, before anything is written."""

import pytest

from evaluation.evaluate import EvalConfig
from netadapt.refine import RefineConfig, RefineError, run_refine


@pytest.mark.parametrize("arch,task,message", [
    ("mobilenetv3_small", "segmentation", "--task segmentation: NetAdapt does not refine dense networks yet"),
    ("mobilenetv3_small_ssdlite_dense", "classification", "has a ssdlite head: NetAdapt does not refine dense"),
])
def test_dense_refinements_are_refused_before_writing(tmp_path, arch, task, message):
    run = tmp_path / "run"
    cfg = RefineConfig(run_dir=str(run), arch=arch, reduction=0.2, eval=EvalConfig(task=task))
    with pytest.raises(RefineError, match=message):
        run_refine(cfg, echo=None)
    assert not run.exists()
