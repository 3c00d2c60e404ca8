"""summaries/records.py: which runs make one table cell. A dataset is its identity (each image folder its own
column); the flags, the device kind and the precision keep rows apart; zero-shot rows are kept apart by what
changes them."""
from __future__ import annotations

from summary_results import fewshot_record, folder_record, section, summarize, table_row

from qlora_clip.run.results import append_jsonl
from qlora_clip.run.spec import dataset_tag
from run_utils import build_parser
from summarize import main as summarize_main

REPEAT = "repeat a run already recorded"


def test_zero_shot_rows_are_kept_apart_by_template_and_compute_dtype(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    settings = [("clip-lora", "fp16", 60.0), ("dataset", "fp16", 62.0), ("clip-lora", "fp32", 61.0)]
    for template, dtype, zero_shot in settings:
        config = vars(build_parser().parse_args(["--dataset", "dtd", "--template", template, "--shots", "4",
                                                 "--compute_dtype", dtype]))
        append_jsonl(results, {"mode": "lora", "dataset": "dtd", "shots": 4, "seed": 1, "backbone": "ViT-B/16",
                               "config": config, "zero_shot_acc": zero_shot, "test_acc": 70.0,
                               "compute_dtype": dtype, "quantized": False})
    assert summarize_main([str(results), "--out", str(tmp_path / "out"), "--tables", "paper"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| zero-shot")]
    cells = sorted(row.split("|")[3].strip() for row in rows)
    assert len(rows) == 3
    assert cells == ["60.00 (n=1)", "61.00 (n=1)", "62.00 (n=1)"]
    assert any("template=dataset" in row for row in rows)
    assert any("fp32" in row for row in rows)


def test_two_image_folders_with_the_same_flags_are_two_columns_not_a_repeated_run(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    for seed in (1, 2):
        append_jsonl(results, folder_record(tmp_path / "birds", seed, 80.0 + seed, zero_shot_acc=70.0))
        append_jsonl(results, folder_record(tmp_path / "boats", seed, 40.0 + seed, zero_shot_acc=30.0))
    out, err = summarize(results, tmp_path, capsys, "--tables", "paper,efficiency,methods")
    assert REPEAT not in err
    paper = section(out, "## Top-1 accuracy")
    assert table_row(paper, "Method")[2:] == ["birds", "boats", "Average"]
    assert table_row(paper, "zero-shot", "0")[2:] == ["70.00 ± 0.00 (n=2)", "30.00 ± 0.00 (n=2)", "50.00"]
    assert table_row(paper, "lora", "1")[2:] == ["81.50 ± 0.71 (n=2)", "41.50 ± 0.71 (n=2)", "61.50 ± 0.71 (n=2)"]
    assert table_row(section(out, "## Efficiency"), "boats", "1", "lora")[6] == "41.50 ± 0.71 (n=2)"
    assert "the average over 2 datasets" in out


def test_nine_image_folders_stay_nine_columns_named_by_their_folders(tmp_path, capsys):
    # Seven folders with names of their own, two that share a name ('imgs'), one named like a paper dataset.
    roots = [tmp_path / f"set{i}" for i in range(6)] + [tmp_path / "pets", tmp_path / "a" / "imgs",
                                                        tmp_path / "b" / "imgs"]
    results = tmp_path / "results.jsonl"
    for i, root in enumerate(roots):
        append_jsonl(results, folder_record(root, 1, 10.0 * i + 5, zero_shot_acc=10.0 * i))
    out, err = summarize(results, tmp_path, capsys, "--tables", "paper")
    assert REPEAT not in err

    def digest(root):
        return dataset_tag("folder", str(root)).rsplit("-", 1)[1]
    names = [f"set{i}" for i in range(6)] + [f"pets ({digest(roots[6])})", f"imgs ({digest(roots[7])})",
                                             f"imgs ({digest(roots[8])})"]
    header = table_row(out, "Method")[2:-1]
    assert sorted(header) == sorted(names)
    assert len(set(header)) == 9
    zero_shot, lora = table_row(out, "zero-shot", "0")[2:], table_row(out, "lora", "1")[2:]
    for i, name in enumerate(names):  # each column holds its own folder's runs, zero-shot and trained alike
        column = header.index(name)
        assert zero_shot[column] == f"{10.0 * i:.2f} (n=1)"
        assert lora[column] == f"{10.0 * i + 5:.2f} (n=1)"
    assert lora[-1] == "45.00 (n=1)"  # the mean of 5, 15, ..., 85: every folder, once


def test_a_cuda_fp16_line_and_a_cpu_fp32_line_of_the_same_flags_do_not_share_a_cell(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    append_jsonl(results, fewshot_record("lora", "dtd", 1, 1, 60.0))  # a GPU, --compute_dtype auto: fp16
    append_jsonl(results, fewshot_record("lora", "dtd", 1, 1, 58.0, zero_shot_acc=39.0, device="cpu",
                                         device_name="cpu", compute_dtype="fp32", memory_kind="cpu_rss"))
    out, err = summarize(results, tmp_path, capsys, "--tables", "paper,methods")
    assert REPEAT not in err
    paper = section(out, "## Top-1 accuracy")
    assert table_row(paper, "lora (cuda, fp16)", "1")[2] == "60.00 (n=1)"
    assert table_row(paper, "lora (cpu, fp32)", "1")[2] == "58.00 (n=1)"
    assert table_row(paper, "zero-shot (cuda, fp16)", "0")[2] == "40.00 (n=1)"
    assert table_row(paper, "zero-shot (cpu, fp32)", "0")[2] == "39.00 (n=1)"
    assert table_row(section(out, "## Methods"), "lora (cpu, fp32)")[8] == "58.00 (n=1)"


def test_the_precision_a_line_computed_in_decides_not_the_flag_that_asked_for_it(tmp_path, capsys):
    # --compute_dtype auto on a GPU computes in fp16, as --compute_dtype fp16 does: one run, recorded twice.
    results = tmp_path / "results.jsonl"
    append_jsonl(results, fewshot_record("lora", "dtd", 1, 1, 60.0))
    append_jsonl(results, fewshot_record("lora", "dtd", 1, 1, 61.0, "--compute_dtype", "fp16"))
    out, err = summarize(results, tmp_path, capsys, "--tables", "paper")
    assert "1 line(s) " + REPEAT in err
    assert table_row(out, "lora", "1")[2] == "61.00 (n=1)"  # the last line of the run


def test_runs_on_two_gpu_models_share_a_row_whose_time_and_memory_say_so(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    append_jsonl(results, fewshot_record("lora", "dtd", 1, 1, 60.0))
    append_jsonl(results, fewshot_record("lora", "dtd", 1, 2, 62.0, device_name="NVIDIA H100 80GB HBM3"))
    out, _ = summarize(results, tmp_path, capsys, "--tables", "paper,efficiency,methods")
    assert table_row(section(out, "## Top-1 accuracy"), "lora", "1")[2] == "61.00 ± 1.41 (n=2)"
    efficiency = table_row(section(out, "## Efficiency"), "DTD", "1", "lora")
    assert efficiency[3].endswith("(2 devices)")
    assert efficiency[4].endswith("(2 devices)")
    assert "(N devices): the runs of the row ran on N GPU models" in section(out, "## Efficiency")
    assert table_row(section(out, "## Methods"), "lora")[5].endswith("(2 devices)")
    csv_text = (tmp_path / "out" / "methods_table.csv").read_text()
    assert "NVIDIA A100-SXM4-40GB; NVIDIA H100 80GB HBM3" in csv_text


def test_runs_on_published_splits_average_over_seeds_in_a_row_of_their_own(tmp_path, capsys):
    """Each seed's split file has its own path and digest; the row is the method on that format of split."""
    results = tmp_path / "results.jsonl"
    for seed in (1, 2, 3):
        append_jsonl(results, fewshot_record("lora", "dtd", 4, seed, 70.0 + seed))
        path = f"DATA/dtd/split_fewshot/shot_4-seed_{seed}_train.jsonl"
        line = fewshot_record("lora", "dtd", 4, seed, 60.0 + seed, "--split_file", path,
                              split_file={"path": path, "format": "2sfs", "files": [path], "digest": f"{seed:016x}",
                                          "val": "the file's val list"})
        line["config"]["split_file_digest"] = f"{seed:016x}"
        append_jsonl(results, line)
    out, err = summarize(results, tmp_path, capsys, "--tables", "paper")
    assert REPEAT not in err
    paper = section(out, "## Top-1 accuracy")
    assert table_row(paper, "lora", "4")[2] == "72.00 ± 1.00 (n=3)"
    assert table_row(paper, "lora (split_file=2sfs)", "4")[2] == "62.00 ± 1.00 (n=3)"


def test_a_method_at_its_defaults_of_each_protocol_is_one_row_name(tmp_path):
    """PromptSRC's epochs default to 50 few-shot and 20 base-to-novel: neither run is a variant of the other."""
    from summaries.records import label_methods
    from run_utils import flag_defaults, parse_args

    records = [{"mode": "promptsrc", "backbone": "ViT-B/16", "protocol": protocol,
                "config": vars(parse_args(["--mode", "promptsrc", "--protocol", protocol, *extra]))}
               for protocol, extra in (("fewshot", []), ("base2new", []), ("base2new", ["--n_iters", "3"]))]
    label_methods(records, flag_defaults())
    assert [r["method"] for r in records] == ["promptsrc", "promptsrc", "promptsrc (n_iters=3)"]
