"""Progress parsing from real-looking trainer log lines (demo, HF/LLaMA-Factory, Megatron/MindSpeed)."""

from __future__ import annotations

from appliance.train.models import Progress
from appliance.train.progress import parse


def test_demo_trainer_lines_last_one_wins():
    p = parse(["appliance-demo-trainer 0.1.0: DEMO LoRA r=8 ...", "step=1/24 loss=5.5359 eta_s=9.2",
               "step=2/24 loss=5.1000 eta_s=8.8"])
    assert (p.step, p.total_steps, p.loss, p.eta_s) == (2, 24, 5.1, 8.8)
    assert p.percent == 8.3 and p.updated_ts is not None


def test_llama_factory_tqdm_and_loss_dicts():
    lines = [
        "[INFO|trainer.py:2134] >> ***** Running training *****",
        "  3%|▎         | 6/200 [00:12<06:28,  2.00s/it]\r  4%|▍         | 8/200 [00:16<1:06:24,  2.00s/it]",
        "{'loss': 1.8732, 'grad_norm': 0.94, 'learning_rate': 9.9e-05, 'epoch': 0.12}",
    ]
    p = parse(lines)
    assert (p.step, p.total_steps) == (8, 200)
    assert p.eta_s == 3984  # 1:06:24
    assert p.loss == 1.8732 and p.epoch == 0.12


def test_megatron_iteration_lines():
    line = (" [2025-06-01 10:00:00] iteration       30/     100 | consumed samples:          240 | "
            "elapsed time per iteration (ms): 812.5 | learning rate: 1.0E-05 | global batch size:     8 | "
            "lm loss: 2.345600E+00 | loss scale: 1.0 |")
    p = parse([line])
    assert (p.step, p.total_steps, p.loss) == (30, 100, 2.3456)
    assert p.eta_s == 56.9  # 70 iterations x 0.8125 s


def test_unrelated_lines_keep_the_previous_reading():
    before = Progress(step=5, total_steps=10, loss=1.0, eta_s=3.0, updated_ts=1.0)
    after = parse(["loading weights", "", "step=oops"], before)
    assert after == before
    nan = parse(["step=3/10 loss=nan eta_s=1.0"])
    assert nan.step == 3 and nan.loss is None
