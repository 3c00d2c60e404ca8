"""A run and its record: its settings, identity, results line, outputs and tracking.

    spec.py           RunSpec: a run as one value, its identity and every name and path derived from it
    schema.py         the results line, declared once (docs/results.md is generated from it)
    results.py        results files: appending atomically, reading with line-level errors, run identity
    outputs.py        where a run writes, checked before it starts
    saved_adapter.py  --save_path's adapter folders and the checks --eval_only makes before loading one
    export.py         --merge_export: a plain model with the adapter merged in
    modelcard.py      model cards of saved adapters and merged exports
    tracking.py       --report_to: TensorBoard and W&B
    card.py           the protocol card: where a run's hyperparameters came from, how its model was chosen
"""
