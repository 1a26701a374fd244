"""few-shot: SetFit on k labelled examples a class (contrastive tuning of the encoder, then a
logistic-regression head).

SetFit's cost is pairs x tokens: each contrastive pair is two texts through the encoder, forward
and backward, padded to the longest text of the batch. With SetFit's defaults (pairs for every
example with every other) Banking77 makes 374,528 pairs (a 3.6 h run on 2 cores); a fixed 2,000
pairs of 256-token texts is ~15 minutes (911 s measured on 77 legal clauses). Unless the user
sets them, tunelab chooses the pairs and the training length from the data (examples, token
lengths) and a time target (`plan_setfit`), so a run stays at a couple of minutes on a 2-core CPU.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from ..data import sample_per_class
from ..hardware.efficiency import work_note
from ..models.embeddings import encode
from ..models.predictors import EmbeddingHeadPredictor
from ..training.progress import ProgressEvent
from .advice import LOAD_SECONDS, per_class_in_train, split_rows
from .base import ConfigError, Params, RunContext, StrategyBase, register
from .classification import TEXT_CLASSIFICATION
from .estimates import estimate_transfer
from .heads import fit_logistic_head
from .linear_probe import label_ids

MAX_PAIRS = 2000
"""The most pairs an automatic plan draws."""
PAIRS_PER_EXAMPLE = 40
"""SetFit's default (num_iterations=20: a positive and a negative pair per example, 20 times): past
it the pairs only repeat the few unique ones k examples a class make (8 a class, 2 labels: 136)."""
TRAIN_SECONDS = 90.0
"""Time the contrastive tuning aims at on the reference CPU (2 cores) when the pairs or the length
are not set; with loading, encoding and the head, a run of ~100 texts takes about 2 minutes."""
SECONDS_PER_TOKEN_PER_BPARAM = 0.044
"""One token of a pair, forward and backward, per billion encoder parameters, on the reference
CPU: 1.0 ms for MiniLM (22.7M) at 128-256 tokens, batch 32 pairs (measured: 2-cores, idle ~1 ms;
15 s a step at 256 tokens, the 911 s of 2,000 pairs above)."""
TUNING_TOKEN_IN_ENCODES = 6.5
"""A token of contrastive tuning (forward and backward in training mode, padded to the batch's
longest, AdamW over every weight) costs as much as ~6.5 tokens of encoding (inference mode,
batches of similar length): 1.86 against 0.28 ms of CPU a token at 256 tokens, measured on the
2-core reference CPU; SECONDS_PER_TOKEN_PER_BPARAM in the encoder's measured rate."""
MIN_TRAIN_LENGTH = 128
"""Long texts are cut to this many tokens for the contrastive tuning (never for the head or for
predictions) before the pairs are cut: a clause's first 128 tokens say most of what it is about,
and a few hundred pairs of them teach the encoder more than a few dozen of whole texts."""
TRUNCATE_QUANTILE = 95
"""Automatic training length: the token length 95% of the examples fit in (the few longest are
cut, instead of padding every batch they fall in to their length)."""


@dataclass(frozen=True)
class SetFitPlan:
    pairs: int
    epochs: int
    max_length: int          # tokens a text is cut to during the contrastive tuning
    batch_size: int
    why: str

    @property
    def steps(self) -> int:
        return self.epochs * math.ceil(self.pairs / self.batch_size)

    @property
    def pair_tokens(self) -> int:
        """Tokens through the encoder (forward and backward) over the run: what its time is."""
        return self.steps * self.batch_size * 2 * self.max_length


def plan_setfit(examples: int, length: float, model_max: int, *, max_pairs: int | None = None,
                epochs: int | None = None, max_length: int | None = None, batch_size: int = 32,
                model_params: int = 22_700_000, cuda: bool = False) -> SetFitPlan:
    """Pairs, epochs and training length for `examples` texts whose TRUNCATE_QUANTILE token length
    is `length`. What the user set is kept; the rest fits TRAIN_SECONDS on the reference CPU
    (on a GPU the time target does not bind): first the training length is cut (down to
    MIN_TRAIN_LENGTH), then the pairs (down to 4 batches)."""
    epochs = epochs or 1
    cap = min(max_length or model_max, model_max)
    if max_length:
        train_len = cap
    else:
        train_len = int(min(cap, max(16, math.ceil(length / 8) * 8)))
    wanted = max_pairs or min(MAX_PAIRS, PAIRS_PER_EXAMPLE * max(examples, 1))
    budget = math.inf if cuda else TRAIN_SECONDS / (SECONDS_PER_TOKEN_PER_BPARAM * max(model_params, 1) / 1e9)
    why = []
    if wanted * epochs * 2 * train_len > budget and not max_length and train_len > MIN_TRAIN_LENGTH:
        train_len = max(MIN_TRAIN_LENGTH, int(budget / (wanted * epochs * 2)) // 8 * 8)
        why.append(f"texts cut to {train_len} tokens for tuning")
    pairs = wanted
    if not max_pairs and wanted * epochs * 2 * train_len > budget:
        batches = int(budget // (epochs * 2 * train_len * batch_size))      # whole batches only
        pairs = max(min(wanted, 4 * batch_size), batches * batch_size)
        why.append(f"{pairs} pairs instead of {wanted}")
    if why:
        why.append(f"to train in ~{TRAIN_SECONDS:.0f} s on 2 CPU cores")
    return SetFitPlan(int(pairs), epochs, int(train_len), batch_size, "; ".join(why))


class FewShotParams(Params):
    k: int = Field(8, ge=1, le=1000, description="labelled examples a class")
    max_pairs: int | None = Field(None, ge=16, description=(
        "contrastive pairs in total (caps the cost); None: chosen from the examples and their lengths, "
        f"up to {MAX_PAIRS}, {PAIRS_PER_EXAMPLE} an example, fewer when tuning would take more than "
        f"~{TRAIN_SECONDS:.0f} s on 2 CPU cores"))
    batch_size: int = Field(32, ge=2)
    body_learning_rate: float = Field(2e-5, gt=0, lt=1)
    epochs: int | None = Field(None, ge=1, description="passes over the pairs; None: 1")
    max_length: int | None = Field(None, ge=8, description=(
        "tokens a text is cut to, in tuning and predictions; None: the model's own length for the head "
        f"and predictions, and for tuning the length {TRUNCATE_QUANTILE}% of the examples fit in, cut to "
        f"{MIN_TRAIN_LENGTH} when longer texts would not train in time"))


@register
class FewShot(StrategyBase):
    name = "few-shot"
    bench = "full"
    bench_params = {"k": 8, "max_pairs": 256}
    task = TEXT_CLASSIFICATION
    family = "transfer"
    rank = 20
    advice = "A few examples per label (8 by default). For when labelling is expensive."
    in_default_compare = True
    summary = "SetFit: tune the encoder on k examples a class. For when labels are scarce."
    Params = FewShotParams

    def check(self, ctx: RunContext) -> None:
        if len(ctx.splits.label_names) < 2:
            raise ConfigError("few-shot needs at least 2 labels")

    def plan(self, ctx: RunContext, shots) -> SetFitPlan:
        from ..models import token_counter

        p: FewShotParams = ctx.params
        lengths = np.asarray(token_counter(ctx.model)(shots.texts) or [16])
        return plan_setfit(len(shots), float(np.percentile(lengths, TRUNCATE_QUANTILE)), ctx.model.max_length,
                           max_pairs=p.max_pairs, epochs=p.epochs, max_length=p.max_length,
                           batch_size=p.batch_size, model_params=ctx.model.parameters or 22_700_000,
                           cuda=ctx.device != "cpu")

    def estimate(self, ctx: RunContext):
        from ..models import token_counter

        shots = sample_per_class(ctx.splits.train, ctx.params.k, seed=ctx.seed)
        plan = self.plan(ctx, shots)
        # estimate_transfer prices a pair text at 3 encodings of a typical training text (its
        # measured rate); a tuning token costs TUNING_TOKEN_IN_ENCODES encoded tokens.
        typical = float(np.mean(token_counter(ctx.model)(ctx.splits.train.texts[:64]) or [plan.max_length]))
        typical = max(1.0, min(typical, ctx.params.max_length or ctx.model.max_length))
        pair_texts = plan.pair_tokens / typical * TUNING_TOKEN_IN_ENCODES / 3
        # and the head encodes the shots and the validation split with the tuned encoder
        return estimate_transfer(ctx, len(shots) + len(ctx.splits.validation), pair_texts=int(pair_texts),
                                 trains_encoder=True)

    def trainable_params(self, predictor, ctx: RunContext, measured: int) -> int:
        return int(predictor.weight.size + predictor.bias.size
                   + sum(p.numel() for p in predictor.encoder.parameters()))

    def encode_work(self, *, train, val, test, labels, cached, params) -> dict:
        # The billing model gets no token lengths here: the pairs are the plan's for texts that
        # train in full (an upper bound for long texts, which the plan cuts).
        shots = min(labels * (_int(params.get("k")) or 8), int(train))
        plan = plan_setfit(shots, 0, 512, max_pairs=_int(params.get("max_pairs")), epochs=_int(params.get("epochs")),
                           batch_size=_int(params.get("batch_size")) or 32, cuda=True)
        return {"texts": shots + val + test, "pairs": plan.pairs * plan.epochs}

    def advise(self, facts, budget: str, cuda: bool):
        if per_class_in_train(facts) < 30:
            return 20, ("Tens of examples per label: few-shot (SetFit) gets the most out of a small labelled "
                        "set; fine-tuning would overfit.")
        return None

    def rough_seconds(self, facts, per_text: float, scale: float, params: dict) -> float:
        train, val, test = split_rows(facts)
        shots = min(facts.labels * (_int(params.get("k")) or 8), train)
        plan = plan_setfit(int(shots), facts.p95_tokens, 512, max_pairs=_int(params.get("max_pairs")),
                           epochs=_int(params.get("epochs")), max_length=_int(params.get("max_length")),
                           batch_size=_int(params.get("batch_size")) or 32,
                           model_params=facts.model_params or 22_700_000)
        # per_text: one encoding of a mean-length text
        tuning = plan.pair_tokens / max(facts.mean_tokens, 1.0) * TUNING_TOKEN_IN_ENCODES * per_text
        return LOAD_SECONDS + (shots + val + test) * per_text + tuning

    def fit(self, ctx: RunContext) -> EmbeddingHeadPredictor:
        from setfit import SetFitModel, Trainer, TrainingArguments

        p: FewShotParams = ctx.params
        names = ctx.splits.label_names
        shots = sample_per_class(ctx.splits.train, p.k, seed=ctx.seed)
        index = {n: i for i, n in enumerate(names)}
        plan = self.plan(ctx, shots)
        model = SetFitModel.from_pretrained(str(ctx.model.path), local_files_only=True,
                                            trust_remote_code=False, use_safetensors=True)
        body = model.model_body
        full_length = min(p.max_length or body.max_seq_length, body.max_seq_length, ctx.model.max_length)
        body.max_seq_length = plan.max_length
        # SetFit draws num_iterations positive and negative pairs per example.
        iterations = max(1, math.ceil(plan.pairs / (2 * len(shots))))
        args = TrainingArguments(output_dir=str(ctx.work_dir / "setfit"), batch_size=plan.batch_size,
                                 num_epochs=plan.epochs, num_iterations=iterations, max_steps=plan.steps,
                                 body_learning_rate=p.body_learning_rate, seed=ctx.seed, logging_steps=1,
                                 report_to="none", save_strategy="no", show_progress_bar=False)
        ctx.progress(ProgressEvent("train", 0, plan.steps, message=(
            f"SetFit on {len(shots)} examples, {plan.pairs} pairs x {plan.epochs} epoch(s), "
            f"{plan.max_length} tokens")))
        trainer = Trainer(model=model, args=args, callbacks=[progress_callback(ctx, plan.steps)])
        quiet_trainer(trainer)
        # SetFit's Trainer may print on stdout: keep stdout for results (compare --json). Only the
        # embedding phase: SetFit's own head (fixed C, fitted on the shots) would be replaced below.
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            trainer.train_embeddings(list(shots.texts), [index[x] for x in shots.labels])
        work = _pair_work(body, shots.texts, plan, time.perf_counter() - t0)
        ctx.progress(ProgressEvent("train", plan.steps, plan.steps))
        body.max_seq_length = full_length
        fit = self.head(ctx, body, shots)
        ctx.notes.update(examples_used=len(shots), pairs=plan.pairs, epochs=plan.epochs,
                         train_max_length=plan.max_length, steps=plan.steps, C=fit.C, head=fit.selection,
                         work=work)
        if plan.why:
            ctx.notes["plan"] = plan.why
        return EmbeddingHeadPredictor(body, fit.weight, fit.bias, names, ctx.model.ref,
                                      body_saved=True, precision=ctx.precision)

    def head(self, ctx: RunContext, body, shots):
        """The logistic head on the tuned body's embeddings (SetFit's own head is fixed at C=1: on
        Banking77's 77 classes that costs ~0.02 macro-F1). C by cross-validation on the shots and
        the validation split pooled when they are few (heads.CV_MAX_ROWS), the head then fitted on
        both; on the validation split otherwise."""
        names = ctx.splits.label_names
        x = encode(body, shots.texts, precision=ctx.precision)
        val = ctx.splits.validation
        x_val = encode(body, val.texts, precision=ctx.precision) if len(val) else None
        return fit_logistic_head(x, label_ids(shots.labels, names), len(names), x_val,
                                 label_ids(val.labels, names) if len(val) else None, seed=ctx.seed)


def _pair_work(body, texts, plan, seconds: float) -> dict:
    """SetFit's contrastive tuning as counts: each pair sends both texts through the whole body,
    forward and backward, once per step. Lengths are the shots' own (truncated as trained); the
    pairs draw texts uniformly, so their mean length is the shots' mean. The trainer's whole time
    counts as step time (SetFit gives no per-step timings)."""
    ids = body.tokenizer(list(texts), truncation=True, max_length=plan.max_length)["input_ids"]
    lengths = np.array([len(x) for x in ids], dtype=np.float64)
    rows = 2 * plan.batch_size * plan.steps
    summary = {"phase": "training", "rows": rows, "tokens": int(rows * lengths.mean()) if len(lengths) else 0,
               "tokens_sq": int(rows * (lengths ** 2).mean()) if len(lengths) else 0, "seconds": seconds,
               "steps": plan.steps, "step_p50_s": None, "step_p95_s": None}
    return work_note(summary, body[0].model, "full")


def _int(value) -> int | None:
    """A hyperparameter from a job's stored settings (a number, a string, or unset)."""
    return int(value) if value not in (None, "") else None


def progress_callback(ctx: RunContext, total_steps: int):
    """A transformers TrainerCallback reporting every optimizer step (with its loss) to
    ctx.progress; whatever ctx.progress raises (a caller stopping the run) propagates out of
    the trainer."""
    from transformers import TrainerCallback

    class SetFitProgress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            loss = logs.get("embedding_loss", logs.get("loss"))
            if loss is not None:
                ctx.progress(ProgressEvent("train", int(state.global_step), total_steps,
                                           epoch=float(state.epoch or 0.0), loss=float(loss)))

    return SetFitProgress()


def quiet_trainer(trainer) -> None:
    """No per-step log dicts or progress bars of transformers' own (the progress callback reports)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        while trainer.st_trainer.pop_callback(cb) is not None:
            pass
