"""CLIP-SVD (qlora_clip/methods/svd.py): only the singular values train, each weight is the base's bit for bit at
step 0, the rank is full, and the run goes base-to-novel through main.py with its saved singular values, its
model card and --eval_only (tests/test_methods_training.py runs its few-shot step, save, reload and merge)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from PIL import Image
from test_modelcard import our_logits, run_snippet

import main
from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.backbones.families import CLIP
from qlora_clip.backbones.targets import linear_module_names
from qlora_clip.methods.interface import load_adapted
from qlora_clip.methods.svd import SingularValues, SingularValueShift
from qlora_clip.run import schema
from run_utils import parse_args, run_spec

CPU = torch.device("cpu")


def decomposed(weight: torch.Tensor) -> tuple[torch.nn.Linear, SingularValueShift]:
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
    layer.requires_grad_(False)  # as attach freezes the base
    shift = SingularValueShift(layer.weight)
    torch.nn.utils.parametrize.register_parametrization(layer, "weight", shift)
    return layer, shift


def test_the_singular_values_of_a_diagonal_matrix_by_hand():
    _, shift = decomposed(torch.tensor([[3.0, 0.0], [0.0, 2.0]]))
    assert shift.s0.tolist() == [3.0, 2.0]
    assert shift.s.tolist() == [3.0, 2.0]


def test_step_zero_is_the_base_weight_bit_for_bit_and_u_s_v_reconstructs_it():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(24, 6, generator=g)  # rectangular, like fc1 (out 4 x in)
    layer, shift = decomposed(weight)
    assert torch.equal(layer.weight, weight)  # W + U diag(s - s0) V^T with s = s0: exactly W
    assert shift.u.shape == (24, 6)
    assert shift.vh.shape == (6, 6)
    # U diag(s) V^T is W to float32's precision (U, V, s are kept in float32)
    error = (shift.singular_weight() - weight.double()).abs().max().item()
    assert error < 2e-6 * weight.abs().max().item()


@pytest.mark.parametrize("shape", [(10, 6), (6, 10), (7, 7)])
def test_the_rank_is_full_where_the_official_rule_would_truncate(shape):
    # The official rank rule floors min(out, in) to a multiple of 4 (6 -> 4, 7 -> 4): ours keeps every value.
    _, shift = decomposed(torch.randn(*shape, generator=torch.Generator().manual_seed(1)))
    assert shift.s.numel() == min(shape)


def test_only_singular_values_train_and_their_gradient_is_u_g_v():
    # W = diag(3, 2): U = V = I up to paired signs; loss = sum(W * G) -> dL/ds_i = u_i^T G v_i = G_ii
    layer, shift = decomposed(torch.tensor([[3.0, 0.0], [0.0, 2.0]]))
    assert [name for name, p in layer.named_parameters() if p.requires_grad] == ["parametrizations.weight.0.s"]
    grad_w = torch.tensor([[1.0, 5.0], [7.0, 2.0]])
    (layer.weight * grad_w).sum().backward()
    assert shift.s.grad.tolist() == pytest.approx([1.0, 2.0], abs=1e-6)
    with torch.no_grad():
        shift.s -= 0.5 * shift.s.grad
    # W' - W = U diag(s - s0) V^T: in the singular bases only the diagonal moved, by -0.5 G_ii
    core = shift.u.T @ (layer.weight.detach() - torch.tensor([[3.0, 0.0], [0.0, 2.0]])) @ shift.vh.T
    assert core.tolist() == [pytest.approx([-0.5, 0.0], abs=1e-6), pytest.approx([0.0, -1.0], abs=1e-6)]


def test_the_layer_computes_the_official_three_product_form():
    # fc_U(s * fc_V(x)) + b (svf_torch.py#L73-L77) with trained s, up to the decomposition's rounding
    g = torch.Generator().manual_seed(2)
    layer, shift = decomposed(torch.randn(5, 7, generator=g))
    with torch.no_grad():
        shift.s.mul_(torch.tensor([1.1, 0.9, 1.3, 0.5, 1.0]))
    x = torch.randn(3, 7, generator=g)
    official = ((x @ shift.vh.T) * shift.s) @ shift.u.T + layer.bias
    torch.testing.assert_close(layer(x), official, rtol=0, atol=1e-5)
    assert not torch.allclose(layer(x), F.linear(x, layer.parametrizations.weight.original, layer.bias), atol=1e-3)


def test_the_targets_are_all_six_linears_of_the_selected_layers():
    from qlora_clip.backbones.loading import open_checkpoint
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(open_checkpoint("tiny").source)
    names = linear_module_names(CLIP, config, "vision", "top")
    layer = f"vision_model.encoder.layers.{config.vision_config.num_hidden_layers - 1}"
    assert names == [f"{layer}.self_attn.{p}_proj" for p in ("q", "k", "v")] + [
        f"{layer}.self_attn.out_proj", f"{layer}.mlp.fc1", f"{layer}.mlp.fc2"]


def test_the_4bit_base_is_refused_saying_why(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--mode", "clip_svd", "--quantize", "4bit"])
    assert "--quantize 4bit: clip_svd does not train on a 4-bit base (its U and V are dense" in capsys.readouterr().err


@pytest.fixture(scope="module")
def base2new(color_folder, tmp_path_factory):
    """One base-to-novel run saved, and its --eval_only: (argv, record, evaluated record)."""
    tmp = tmp_path_factory.mktemp("clip-svd")
    argv = ["--backbone", "tiny", "--dataset", "folder", "--root_path", str(color_folder), "--shots", "2",
            "--n_iters", "2", "--batch_size", "4", "--lr", "1e-2", "--mode", "clip_svd", "--protocol", "base2new",
            "--results_file", str(tmp / "results.jsonl"), "--save_path", str(tmp / "saved")]
    record = main.main(argv)
    return argv, record, main.main([*argv, "--eval_only"])


def test_base_to_novel_runs_and_reloads_to_the_same_accuracies(base2new):
    _, record, evaluated = base2new
    schema.check(record)
    assert record["protocol"] == "base2new"
    assert record["adapter_params"] == 72 * 64  # 6 layers x 6 Linears x 2 towers, rank 64 (the tiny widths)
    assert record["trainable_params"] == record["adapter_params"]
    assert record["peft_config"]["qlora_clip_tuner"] == "singular_values"
    for name in ("test_acc", "base_acc", "new_acc", "zero_shot_acc", "zero_shot_new_acc"):
        assert evaluated[name] == record[name], name
    assert evaluated["trainable_params"] == 0


def test_its_card_loads_it_with_our_loader_and_gives_our_logits(base2new, color_folder):
    argv, record, _ = base2new
    folder = run_spec(parse_args(argv)).adapter_dir
    card = ModelCard.load(folder / "README.md")
    assert "CLIP-SVD" in card.text
    assert "q, k, v, o, fc1 and fc2 Linears" in card.text
    classnames = sorted(p.name for p in color_folder.iterdir() if p.is_dir())
    images = [Image.open(path).convert("RGB") for path in sorted(color_folder.glob("*/00[0-2].png"))]
    plain = run_snippet(card, classnames, images)
    assert isinstance(plain["model"], SingularValues)
    spec = run_spec(parse_args(argv))
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32, saved=folder)
    prompts = ClassPrompts(adapted.bundle.tokenizer, [f"a photo of a {name}." for name in classnames], CPU)
    torch.testing.assert_close(plain["logits"], our_logits(adapted, plain["inputs"]["pixel_values"], prompts))


def test_interpolation_holds_the_interpolated_weights_and_puts_the_trained_values_back():
    """--interpolate: W is linear in s, so s0 + alpha (s - s0) gives (1 - alpha) W_0 + alpha W_1 in every layer;
    alpha 0 is the base bit for bit, and leaving the context restores the trained s."""
    spec = run_spec(parse_args(["--backbone", "tiny", "--mode", "clip_svd", "--device", "cpu"]))
    adapted = load_adapted(spec.backbone, spec.adapter, CPU, torch.float32)
    shifts = adapted.shifts()
    with torch.no_grad():
        for shift in shifts.values():
            shift.s.add_(0.1 * torch.randn(shift.s.shape, generator=torch.Generator().manual_seed(2)))
    name = next(iter(shifts))
    layer = adapted.model.get_submodule(name)
    trained = {k: v.s.detach().clone() for k, v in shifts.items()}
    w1 = layer.weight.detach().clone()
    with adapted.zero_shot_view():
        w0 = layer.weight.detach().clone()
    with adapted.interpolated(0.0):
        assert torch.equal(layer.weight, w0)
    with adapted.interpolated(0.25):
        torch.testing.assert_close(layer.weight, 0.75 * w0 + 0.25 * w1, atol=1e-6, rtol=1e-5)
    with adapted.interpolated(1.0):
        assert torch.equal(layer.weight, w1)
    assert all(torch.equal(shifts[k].s, v) for k, v in trained.items())
