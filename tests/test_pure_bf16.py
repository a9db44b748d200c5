"""training.precision: bf16-pure runs full fine-tuning as planned: bf16 parameters, gradients and AdamW
moments, no fp32 master copy (on a CPU, with the demo's tiny Llama)."""

import pytest

pytest.importorskip("trl")
torch = pytest.importorskip("torch")

from recipe_ft.compiler.pipeline import compile_file  # noqa: E402
from recipe_ft.runtime import demo, train  # noqa: E402


@pytest.mark.parametrize("precision", ["bf16-pure", "bf16"])
def test_full_fine_tuning_dtypes_follow_the_precision(tmp_path, monkeypatch, precision):
    monkeypatch.setenv("RECIPE_CALIBRATION", "off")
    recipe = demo.make(tmp_path / "qs", train_examples=16, eval_examples=2, epochs=1)
    plan = compile_file(str(recipe), ["method.name=full", f"training.precision={precision}",
                                      "training.max_steps=2", "data.eval=null"]).plan
    session = train.prepare(plan, recipe.parent, log=lambda *a: None)
    session.trainer.train()
    model, optimizer = session.trainer.model, session.trainer.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    states = [s for p in params for s in optimizer.state[p].values() if torch.is_tensor(s) and s.dim() > 0]
    assert params and states
    expected = torch.bfloat16 if precision == "bf16-pure" else torch.float32
    assert {p.dtype for p in params} == {expected}
    assert {s.dtype for s in states} == {expected}  # exp_avg, exp_avg_sq in the parameter dtype
    assert any(not torch.equal(s, torch.zeros_like(s)) for s in states)  # the optimizer really stepped
    if precision == "bf16-pure":
        assert any("no fp32 master copy" in w for w in plan.warnings)
