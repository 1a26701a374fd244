"""Batch predictions from the command line: remote `tunelab --server URL jobs batch-predict MODEL
FILE` (a job on the server: progress, then the output downloaded with --out), and local `tunelab
predict MODEL_DIR --file texts.csv --out preds.csv` (the same output, written here, streamed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import dump, remote, say as _say
from .exits import EXIT_OK, JOB_EXIT


def add_remote(jobs, watch) -> None:
    """`jobs batch-predict` on the remote `jobs` subcommands; `watch(client, job_id, as_json)` follows
    a job (remote._watch)."""
    p = jobs.add_parser("batch-predict", help="label every text of a file with a tuned model (a job, billed per "
                                              "prediction; --out to wait and download the output)")
    p.add_argument("model", help="the tuned model's id (ft:…)")
    p.add_argument("file", help="a CSV, TSV, JSONL or text file (one text a line); or, with --file-id, nothing")
    p.add_argument("--top-k", type=int, default=3, choices=range(1, 21), metavar="K",
                   help="labels (with probabilities) per row, 1 to 20 (default 3)")
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="the output's format (default csv)")
    p.add_argument("--text-column", help="the column (or JSON field) of the texts; detected when left out")
    p.add_argument("--file-id", action="store_true", help="FILE is the id of a file already uploaded")
    p.add_argument("--out", type=Path, help="wait for the job, then write its output here")
    p.add_argument("--idempotency-key", help="sending the same key again returns the first job")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
    p.set_defaults(func=remote(lambda client, args: batch_predict_remote(client, args, watch)))


def add_local(predict: argparse.ArgumentParser) -> None:
    predict.add_argument("--out", type=Path, help="with --file: write every row's label, probability and top "
                                                  "labels to this CSV/JSONL file (streamed; large files welcome)")
    predict.add_argument("--top-k", type=int, default=3, choices=range(1, 21), metavar="K",
                         help="with --out: labels per row (default 3)")
    predict.add_argument("--text-column", help="with --out: the column of the texts (detected when left out)")


def batch_predict_remote(client, args, watch) -> int:
    options = dict(top_k=args.top_k, format=args.format, text_column=args.text_column,
                   idempotency_key=args.idempotency_key)
    job = client.batch_predict(args.model, None, file_id=args.file, **options) if args.file_id else \
        client.batch_predict(args.model, args.file, **options)
    if args.out is None:
        dump(job) if args.json else print(job.id)
        return EXIT_OK
    _say(f"batch prediction {job.id} {job.status}")
    code = watch(client, job.id, args.json)
    if client.jobs.get(job.id).status != "succeeded":
        return code
    client.jobs.download_output(job.id, args.out)
    _say(f"predictions written to {args.out}")
    return JOB_EXIT.get("succeeded", EXIT_OK)


def predict_to_file(predictor, args) -> int:
    """`tunelab predict MODEL_DIR --file F --out OUT`: every row of F labelled into OUT."""
    from ..jobs.batch_predict import BatchInputError, predict_file

    fmt = "jsonl" if args.out.suffix.lower() in (".jsonl", ".ndjson") else "csv"
    try:
        result = predict_file(predictor, args.file, args.out, fmt=fmt, top_k=args.top_k,
                              text_column=args.text_column)
    except BatchInputError as exc:
        raise SystemExit(str(exc)) from None
    _say(f"{result['rows']:,} rows labelled into {args.out} ({result['rows_per_s'] or 0:,.0f} rows/s)")
    return EXIT_OK
