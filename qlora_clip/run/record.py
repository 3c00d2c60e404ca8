"""The end of every run, whatever its method: its results line assembled, its outputs written, the line appended.

`run_fields` (the run itself: identity, config, training, memory, where and when) and
`method_fields` (what the method says of itself, and the text pass's speed-ups where it trained on
images) are the parts main.py assembles with the accuracies; `finish` writes the outputs the flags
ask for (--save_path's adapter, run.json and model card; --merge_export), then checks the line
against the schema, appends it, and reports it to the tracking backends. Nothing after training
loses the line: a failed output (a full disk, an export folder another run filled meanwhile, a
model card, whatever the error) leaves its field null, a failed report to a tracking backend
comes after the line is written, and every failure is raised afterwards as one UserError (exit 2),
naming the flag and saying where the line is.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Callable

import torch

from qlora_clip.backbones.encode import ClassPrompts
from qlora_clip.data.items import FewShotDataset
from qlora_clip.errors import UserError
from qlora_clip.machine import library_versions
from qlora_clip.methods.interface import Adapted
from qlora_clip.run import saved_adapter, schema
from qlora_clip.run.export import export_merged
from qlora_clip.run.results import append_jsonl, timestamp
from qlora_clip.run.spec import RunSpec
from qlora_clip.run.tracking import Tracker
from qlora_clip.training.distributed import Distributed
from qlora_clip.training.result import TrainResult
from qlora_clip.training.text_pass import speedup_fields

log = logging.getLogger("qlora-clip")


def run_fields(spec: RunSpec, adapted: Adapted, dist: Distributed, compute_dtype: str, result: TrainResult,
               started_at: str) -> dict:
    """The results fields of the run itself: identity and config, training, memory, size, where and when."""
    device = dist.device
    peak = result.peak_memory or {"peak_memory_mb": None, "memory_kind": None, "peak_memory_reserved_mb": None}
    return schema.fields(
        mode=spec.method, dataset=spec.dataset, shots=spec.shots, seed=spec.seed, backbone=spec.backbone,
        protocol=spec.protocol, config=dict(spec.flags),
        train_seconds=result.seconds, total_steps=result.steps, train_images_seen=result.images_seen,
        skipped_steps=result.skipped_steps, input_wait_seconds=result.input_wait_seconds,
        final_loss=result.losses[-1] if result.losses else None,
        **peak,
        model_footprint_mb=adapted.footprint_bytes() / 2**20,
        quantized=adapted.method.quantized,
        compute_dtype=compute_dtype, device=str(device), processes=dist.world,
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        # Where and when it ran: concurrent sweeps on several GPUs or machines share one results file.
        host=socket.gethostname(), cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        started_at=started_at, finished_at=timestamp(), versions=library_versions(),
    )


def method_fields(adapted: Adapted, result: TrainResult, prompts: ClassPrompts, buckets_off: str | None,
                  test_embeddings: dict) -> dict:
    """What the method says of itself (its weights, size, effective config; a baseline's search and features),
    and, for a method trained on images, which text speed-ups the training used; a method fitted on frozen
    features lists the test set's beside its own (`test_embeddings`: read from the store or encoded)."""
    fields = schema.fields(**adapted.fields())
    if adapted.method.trains_on == "images":
        fields.update(schema.fields(**speedup_fields(result.text_speedups, prompts, buckets_off)))
    else:
        fields["baseline_features"] = {**fields["baseline_features"], "test": test_embeddings}
    return fields


def draw_fields(data: FewShotDataset) -> dict:
    """Where the run's train and val images came from when a published split gave them (--split_file): the file,
    its format, the digest of its lists, where val came from; nothing for our own draw."""
    return schema.fields(split_file=data.split_file) if data.split_file is not None else {}


def finish(spec: RunSpec, adapted: Adapted, record: dict, tracker: Tracker, template: str,
           failed: list[str] = ()) -> dict:
    """Write the outputs, append the line (the outputs' failures recorded, never losing it), report; raise
    UserError naming what failed after the line is safe (`failed`: outputs the run wrote before, e.g.
    --save_predictions's file)."""
    errors = list(failed) + write_outputs(spec, adapted, record, template)
    schema.check(record)
    append_jsonl(spec.outputs.results_file, record)
    errors += attempt(f"--report_to {' '.join(spec.tracking.backends)}", "could not report the results",
                      lambda: report(tracker, record))
    log.info("%s %s %d-shot seed %d: zero-shot %.2f%% -> test %.2f%% | train %.1fs | training peak %s",
             spec.method, spec.dataset, spec.shots, spec.seed, record["zero_shot_acc"], record["test_acc"],
             record["train_seconds"],
             f"{record['peak_memory_mb']:.0f} MB ({record['memory_kind']})" if record["peak_memory_mb"] else "-")
    if errors:
        raise UserError("; ".join(errors) + f" (the results line is in {spec.outputs.results_file})")
    return record


def write_outputs(spec: RunSpec, adapted: Adapted, record: dict, template: str) -> list[str]:
    """Save the adapter (--save_path) and the merged model (--merge_export), recording where in `record`.

    A failure here (a full disk, say) must not lose the run: it is logged, its field stays null,
    and the message comes back to be raised after the results line is written.
    """
    errors = []
    record.update(schema.fields(adapter_dir=None, merge_export=None))
    source = spec.checkpoint.source
    if spec.adapter_dir is not None and not spec.evaluation.eval_only:
        def save() -> None:
            saved_adapter.save(adapted, record, spec.adapter_dir, source, template)
            record["adapter_dir"] = str(spec.adapter_dir)

        errors += attempt("--save_path", f"could not save the adapter to {spec.adapter_dir}", save)
    if spec.outputs.merge_export is not None:
        def export() -> None:
            record["merge_export"] = str(export_merged(adapted, source, spec.outputs.merge_export, record,
                                                       overwrite=spec.outputs.overwrite_export, template=template))

        errors += attempt("--merge_export", f"could not write {spec.outputs.merge_export}", export)
    return errors


def report(tracker: Tracker, record: dict) -> None:
    """The test accuracy at the run's last step, then the results line, to the tracking backends; closes them."""
    tracker.log_eval({"accuracy": record["test_acc"]}, step=record["total_steps"])
    tracker.finish(record)


def attempt(flag: str, what: str, step: Callable[[], None]) -> list[str]:
    """Run one step after training; its failure, whatever it is, as a message to raise once the line is safe.

    A UserError says what to do itself (an export folder another run filled meanwhile); any other error is
    logged with its traceback (it may be a bug) and named by its type.
    """
    try:
        step()
    except UserError as err:
        log.error("%s", err)
        return [str(err)]
    except Exception as err:  # noqa: BLE001 - the line must survive any failure; the traceback goes to the log
        message = f"{flag}: {what} ({type(err).__name__}: {err})"
        log.exception("%s", message)
        return [message]
    return []
