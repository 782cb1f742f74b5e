"""One experiment, end to end: config -> training with pruning -> records -> summary.

:func:`run` trains the configured model, applies the regularizer and the
pruner after every optimiser step, records the per-epoch tables of
:mod:`prunedyn.run.records`, checkpoints after every epoch, and finally compacts
the network to report its dense and compact sizes. Reruns with the same
config and seed give identical tables and summary on CPU; a run killed at
any point continues from its last checkpoint with ``resume=True`` and ends
with the numbers of an uninterrupted run.

The ``train`` section of the config (:class:`prunedyn.run.config.TrainConfig`)
selects the training path: the reference path (its defaults) or the parts of
the fast GPU path -- the training set resident on the device and augmented
there, bf16 autocast, channels_last, ``torch.compile``, fewer host reads of
the loss. The summary records the path that ran (``train_path``, see
:func:`train_path`); :func:`recorded_train_path` reads it back, also for runs
made before the section existed.
"""
from __future__ import annotations

import dataclasses
import math
import platform
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from prunedyn import __version__
from prunedyn.core.hooks import PruningHooks
from prunedyn.core.pruning import (
    PRUNERS,
    StochasticWeightPruner,
    WeightPruner,
    prunable_weights,
)
from prunedyn.core.regularization import (
    Regularizer,
    make_regularizer,
    regularized_tensors,
)
from prunedyn.data.datasets import DatasetBundle, load_dataset
from prunedyn.models import build_model
from prunedyn.run.config import ExperimentConfig, config_hash
from prunedyn.run.device import autocast, numeric_path, resolve_device, swp_backend, train_path
from prunedyn.run.folders import (  # RunError, TrainingDiverged: re-exported (the errors of a run)
    RunError,
    TrainingDiverged,
    _checkpoint,
    folder_lock,
    prepare_folder,
    read_run_config,
)
from prunedyn.run.records import (
    RecordError,
    RunRecord,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
)
from prunedyn.modes import eval_mode
from prunedyn.structure.nodes import HIST_EDGES, magnitude_histogram, model_nodes
from prunedyn.structure.surgery import compact
from prunedyn.tasks.scoring import Task, evaluate, task_for  # noqa: F401 (evaluate: re-exported)


@dataclass
class Trainer:
    """The live objects of a run, built from its config."""

    cfg: ExperimentConfig
    data: DatasetBundle
    model: nn.Module
    optimizer: torch.optim.Optimizer
    regularizer: Regularizer
    pruner: WeightPruner
    device: torch.device
    steps_per_epoch: int
    task: Task
    # the training forward: the model, or its torch.compile wrapper (train.compile); the
    # module itself stays in ``model`` for evaluation, snapshots, surgery and checkpoints
    forward: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    # the training set on the device (train.resident), else None (batches come from ``data``)
    train_x: Optional[torch.Tensor] = None
    train_y: Optional[torch.Tensor] = None
    # the pruner and the regularizer on the optimiser's step (prunedyn.attach's hooks): set by build
    hooks: Optional[PruningHooks] = None

    @property
    def weights(self) -> List[torch.Tensor]:
        """The tensors the regularizer acts on (``regularizer.scope``, ``regularizer.layers``): the
        hooks' list, chosen once in :func:`build`."""
        return self.hooks.weights


def regularized_parameters(model: nn.Module, scope: str, layers: Optional[Sequence[str]] = None) -> List[torch.Tensor]:
    """The tensors ``regularizer.scope`` (and ``regularizer.layers``) select: see
    :func:`prunedyn.core.regularization.regularized_tensors`; a module name the model lacks is a
    :class:`RunError`."""
    try:
        return regularized_tensors(model, scope, field="regularizer.scope", layers=layers)
    except ValueError as e:
        if str(e).startswith("regularizer.layers:"):  # a name the model lacks: a run error, like the others
            raise RunError(str(e)) from None
        raise


def lr_at(cfg, step: int, total_steps: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based) out of ``total_steps``."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))
    return cfg.lr


def make_optimizer(cfg, params) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    # decay lives in the regularizer, never in the optimiser, so it touches weights only
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)


def make_pruner(cfg: ExperimentConfig, model: nn.Module, steps_per_epoch: int) -> WeightPruner:
    """The pruner of ``cfg.pruner`` (:data:`prunedyn.core.pruning.PRUNERS`); epochs become optimiser steps."""
    p = cfg.pruner
    return PRUNERS.get(p.kind).from_config(
        p,
        model,
        ramp_steps=int(round(p.ramp_epochs * steps_per_epoch)),
        start_step=int(round(p.start_epoch * steps_per_epoch)),
        seed=cfg.seed + 1,  # its own stream, apart from the init and the data order
        last_step=cfg.epochs * steps_per_epoch - 1,
    )


def load_run_model(folder: Path, data: Optional[DatasetBundle] = None, map_location: str = "cpu"):
    """``(model, config, checkpoint)`` of the run in ``folder``: its model built from its
    ``config.yaml`` (for ``data``'s shapes; loaded from the config when not given) with the
    weights of its last checkpoint. Raises :class:`RunError` when ``folder`` is no run folder."""
    folder = Path(folder)
    if not (folder / "config.yaml").exists() or not (folder / "checkpoint.pt").exists():
        raise RunError(f"{folder} is not a run folder with config.yaml and checkpoint.pt")
    cfg = read_run_config(folder / "config.yaml")
    data = load_dataset(cfg.data) if data is None else data
    model = build_model(cfg.model, data.in_shape, data.num_classes)
    ckpt = _checkpoint(folder / "checkpoint.pt", map_location)
    model.load_state_dict(ckpt["model"])
    return model, cfg, ckpt


def initial_model_from_run(folder: Path, data: DatasetBundle, compact_first: bool) -> nn.Module:
    """The last checkpoint of the run in ``folder``, compacted if asked (deterministic)."""
    try:
        model, _, _ = load_run_model(folder, data)
    except RunError as e:
        raise RunError(f"init.run: {e}") from None
    if compact_first:
        model, _ = compact(model, data.x_test[:64])
    return model.train()


@torch.no_grad()
def check_model_fits_data(cfg: ExperimentConfig, model: nn.Module, data: DatasetBundle, device) -> None:
    """One eval-mode forward pass on two training examples (no random draw, no state changed): the
    outputs must have the shape the data's task scores. Raises :class:`RunError` naming both."""
    x, y = data.x_train[:2].to(device), data.y_train[:2]
    seg = getattr(data, "task", "classification") == "segmentation"
    want = (len(y), data.num_classes, *y.shape[1:]) if seg else (len(y), data.num_classes)
    with eval_mode(model):
        try:
            got = tuple(model(x).shape)
        except (RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0][:200]
            raise RunError(f"model.name: {cfg.model.name!r} cannot read data {cfg.data.name!r} "
                           f"(inputs {tuple(x.shape[1:])}): {first}") from None
    if got != want:
        task = "segmentation" if seg else "classification"
        raise RunError(f"model.name: {cfg.model.name!r} gives outputs of shape {got[1:]} on data {cfg.data.name!r}, "
                       f"whose {task} task needs {want[1:]}")


def build(cfg: ExperimentConfig, data: Optional[DatasetBundle] = None) -> Trainer:
    """Data, model (seeded init), optimiser, regularizer and pruner for ``cfg``."""
    torch.set_flush_denormal(True)  # decayed weights turn denormal; flushing halves CPU time
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    data = data if data is not None else load_dataset(cfg.data)
    torch.manual_seed(cfg.seed)
    if cfg.init.run:
        model = initial_model_from_run(Path(cfg.init.run), data, cfg.init.compact).to(device)
    else:
        try:
            model = build_model(cfg.model, data.in_shape, data.num_classes).to(device)
        except (MemoryError, RuntimeError) as e:  # torch's allocator raises RuntimeError
            if not isinstance(e, MemoryError) and "alloc" not in str(e):
                raise
            raise RunError(f"model: {cfg.model.name!r} with these widths does not fit in memory "
                           f"({' '.join(str(e).split())[:160]})") from None
    check_model_fits_data(cfg, model, data, device)
    if cfg.model.balance != 1.0 and not hasattr(model, "rebalance"):
        raise RunError(f"model.balance: applies to the mlp only, not {cfg.model.name!r}; leave it at 1")
    if cfg.train.channels_last:
        # 4-D parameters (conv kernels) only; a model without any is unchanged
        model = model.to(memory_format=torch.channels_last)
    steps = math.ceil(len(data.y_train) / cfg.data.batch_size)
    regularizer = make_regularizer(cfg.regularizer.kind, cfg.regularizer.lam, model=model)
    if regularizer.lam and type(regularizer) is not Regularizer and not regularized_parameters(model, cfg.regularizer.scope, cfg.regularizer.layers):
        raise RunError(f"regularizer.scope: {cfg.regularizer.scope!r} selects no tensor of model {cfg.model.name!r} (it has no BatchNorm); allowed for it: weights, all")
    optimizer = make_optimizer(cfg.optimizer, model.parameters())
    pruner = make_pruner(cfg, model, steps)
    # the loop of train_epoch is a plain loop over attach()'s hooks: they run the pruner and the
    # regularizer around optimizer.step(); the run keeps their state in its own checkpoint
    hooks = PruningHooks(optimizer, model, pruner, None if type(regularizer) is Regularizer else regularizer,
                         regularized_parameters(model, cfg.regularizer.scope, cfg.regularizer.layers),
                         forward_hook=False, state_dict_hooks=False)
    return Trainer(
        cfg=cfg,
        data=data,
        model=model,
        optimizer=optimizer,
        regularizer=regularizer,
        pruner=pruner,
        hooks=hooks,
        device=device,
        steps_per_epoch=steps,
        task=task_for(data, augment=cfg.data.augment),
        # static shapes: one graph for the full batches and one for the epoch's last, smaller one
        forward=torch.compile(model, dynamic=False) if cfg.train.compile else model,
        train_x=data.x_train.to(device) if cfg.train.resident else None,
        train_y=data.y_train.to(device) if cfg.train.resident else None,
    )


def train_epoch(t: Trainer, epoch: int, progress=None) -> Dict[str, float]:
    """One pass over the training set in the epoch's seeded order.

    The order and the augmentation come from one CPU generator seeded by the
    seed and the epoch, on every path, so every path sees the same batches.
    On the reference path each batch is gathered and augmented on the host
    and moved to the device; with ``train.resident`` the epoch's order and
    augmentation draws go to the device once and each batch is gathered and
    augmented there. The loss and the correct count are summed on the device
    (float64 and int64: the sums of the host loop, exactly) and read by the
    host every ``train.sync_every`` steps, when their finiteness is checked
    (every step: before the step is applied, as recorded).
    """
    cfg = t.cfg
    sync_every = cfg.train.sync_every
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    order = torch.randperm(len(t.data.y_train), generator=g)
    batch = cfg.data.batch_size
    starts = range(0, len(order), batch)
    resident = t.train_x is not None
    if resident:
        # the host path's draws, made in its order (batch after batch) before any batch is used
        draws = [t.task.augment_draws(len(order[i : i + batch]), g) for i in starts] if cfg.data.augment else []
        draws = tuple(torch.cat(parts).to(t.device) for parts in zip(*draws))
        order = order.to(t.device)
    total_steps = cfg.epochs * t.steps_per_epoch
    step = (epoch - 1) * t.steps_per_epoch
    t.model.train()
    forward = t.model if t.forward is None else t.forward
    total = torch.zeros((), dtype=torch.float64, device=t.device)
    correct = torch.zeros((), dtype=torch.int64, device=t.device)
    seen, pixels, last_read = 0, 0, 0
    for n, i in enumerate(starts, 1):
        idx = order[i : i + batch]
        if resident:
            xb, yb = t.train_x[idx], t.train_y[idx]
            if cfg.data.augment:
                xb, yb = t.task.augment_with(xb, yb, tuple(d[i : i + batch] for d in draws))
        else:
            xb, yb = t.data.x_train[idx], t.data.y_train[idx]
            if cfg.data.augment:
                xb, yb = t.task.augment(xb, yb, g)
            xb, yb = xb.to(t.device), yb.to(t.device)
        if cfg.train.channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        lr = lr_at(cfg.optimizer, step, total_steps)
        for group in t.optimizer.param_groups:
            group["lr"] = lr
        step += 1
        t.hooks.before_forward()  # targeted dropout's masks (a no-op for the other pruners)
        with autocast(t):
            out = forward(xb)
            # the loss in fp32 whatever the forward's dtype (a no-op on the fp32 path)
            loss = t.task.loss(out.float(), yb)
        if sync_every == 1 and not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {float(loss.detach())} in epoch {epoch} (lr {lr}, lambda {cfg.regularizer.lam}); "
                "the last good checkpoint is kept"
            )
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t.optimizer.step()  # the hooks: regularizer gradient, the step, decay, pruning
        total += loss.detach().double() * len(yb)
        correct += (out.argmax(1) == yb).sum()
        seen += len(yb)
        pixels += yb.numel()
        if sync_every != 1 and (n == len(starts) or (sync_every and n % sync_every == 0)):
            _check_loss_sum(total, epoch, last_read, n, lr, cfg.regularizer.lam)
            last_read = n
        if progress is not None:
            progress.update(1)
    return {"train_loss": float(total) / seen, "train_accuracy": int(correct) / pixels}


def _check_loss_sum(total: torch.Tensor, epoch: int, after: int, upto: int, lr: float, lam: float) -> None:
    """The deferred check (``train.sync_every != 1``): a NaN/inf loss anywhere makes the running sum non-finite."""
    if not torch.isfinite(total):
        raise TrainingDiverged(
            f"loss became {float(total)} in epoch {epoch}, in one of its steps {after + 1}-{upto} "
            f"(train.sync_every; lr {lr}, lambda {lam}); the last good checkpoint is kept"
        )


def snapshot(t: Trainer, epoch: int, train: Dict[str, float]) -> Dict[str, List[dict]]:
    """The rows of every table for the model's state at the end of ``epoch``."""
    scores = t.task.evaluate(t.model, t.data, t.device)
    if t.data.x_val is not None:  # the validation split's scores, as val_*
        val = t.task.evaluate(t.model, t.data.validation_view(), t.device)
        scores.update({f"val_{k[5:]}": v for k, v in val.items()})
    weights = prunable_weights(t.model)
    stats = model_nodes(t.model)
    n_w = sum(w.numel() for w in weights.values())
    n_zero = sum(int((w == 0).sum()) for w in weights.values())
    sigma = t.pruner.sigma_at() if isinstance(t.pruner, StochasticWeightPruner) else float("nan")
    nodes_total = sum(s.size for s in stats)
    alive = sum(int(s.alive.sum()) for s in stats)
    metrics = {
        "epoch": epoch,
        "step": epoch * t.steps_per_epoch,
        "train_loss": train.get("train_loss", float("nan")),
        "train_accuracy": train.get("train_accuracy", float("nan")),
        **scores,
        "weight_sparsity": n_zero / n_w,
        "nodes_alive": alive,
        "dead_node_fraction": 1 - alive / nodes_total if nodes_total else 0.0,
        "penalty": t.regularizer.penalty(t.weights),
        "sigma": sigma,
        "lam": t.regularizer.lam,
    }
    layers, nodes = [], []
    for s in stats:
        w = weights[s.name]
        # one host copy per statistic, not one read per node (each a device sync on a GPU)
        node_cols = {k: getattr(s, k).tolist() for k in ("in_l2", "out_l2", "in_l1", "out_l1", "in_dead", "out_dead")}
        layers.append(
            {
                "epoch": epoch,
                "layer": s.name,
                "nodes": s.size,
                "alive": int(s.alive.sum()),
                "in_dead": int(s.in_dead.sum()),
                "out_dead": int(s.out_dead.sum()),
                "both_dead": int((s.in_dead & s.out_dead).sum()),
                "weight_sparsity": float((w == 0).float().mean()),
            }
        )
        for j in range(s.size):
            nodes.append(
                {
                    "epoch": epoch,
                    "layer": s.name,
                    "node": j,
                    "in_l2": node_cols["in_l2"][j],
                    "out_l2": node_cols["out_l2"][j],
                    "in_l1": node_cols["in_l1"][j],
                    "out_l1": node_cols["out_l1"][j],
                    "in_dead": node_cols["in_dead"][j],
                    "out_dead": node_cols["out_dead"][j],
                }
            )
    hist = []
    for name, w in weights.items():
        zeros, counts = magnitude_histogram(w)
        hist.append({"epoch": epoch, "layer": name, "bin": -1, "lo": 0.0, "hi": 0.0, "count": zeros})
        for b, c in enumerate(counts):
            hist.append(
                {"epoch": epoch, "layer": name, "bin": b, "lo": HIST_EDGES[b], "hi": HIST_EDGES[b + 1], "count": int(c)}
            )
    return {"metrics": [metrics], "layers": layers, "nodes": nodes, "histograms": hist}


def _check_finite(model: nn.Module, epoch: int) -> None:
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise TrainingDiverged(f"parameter {name} became NaN/inf in epoch {epoch}; the last good checkpoint is kept")


def save_checkpoint(t: Trainer, path: Path, epoch: int, h: str, elapsed: float,
                    rows: Optional[Dict[str, List[dict]]] = None) -> None:
    """Everything needed to continue after ``epoch`` exactly as if never interrupted.

    Tables are saved before the checkpoint; on resume rows after the
    checkpoint's epoch are dropped, so the two always agree. ``rows``: the
    tables' rows of ``epoch`` at full precision (the CSVs keep 9 digits), from
    which a resumed run rebuilds its summary bit for bit.
    """
    atomic_torch_save(
        {
            "epoch": epoch,
            "config_hash": h,
            "model": t.model.state_dict(),
            "optimizer": t.optimizer.state_dict(),
            "pruner": t.pruner.state_dict(),
            "elapsed": elapsed,
            # plain Python values only: the checkpoint is read back with weights_only=True
            "rows": {k: [{c: (v.item() if hasattr(v, "item") else v) for c, v in r.items()} for r in rs]
                     for k, rs in (rows or {}).items()},
        },
        path,
    )


def run(
    cfg: ExperimentConfig,
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    data: Optional[DatasetBundle] = None,
) -> dict:
    """Train ``cfg`` into folder ``out`` and return its summary (see :mod:`prunedyn.run.records`)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: exists and is not a folder (the run folder to write; name another)")
    h = config_hash(cfg)
    with folder_lock(out):  # two processes asking for one run: the second waits, then reads it
        finished = prepare_folder(out, h, resume, overwrite)
        if finished is not None:
            return finished
        with pinned_threads(cfg.threads):
            return _train(cfg, out, h, resume, progress, data, clear=overwrite)


@contextmanager
def pinned_threads(n: int):
    """torch's intra-op thread count set to ``n`` inside the block (``n == 0``: unchanged)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(cfg: ExperimentConfig, out: Path, h: str, resume: bool, progress: bool, data: Optional[DatasetBundle],
           clear: bool = False) -> dict:
    trainer = build(cfg, data)  # loads and verifies data before anything is written
    ckpt_path = out / "checkpoint.pt"
    ckpt = _checkpoint(ckpt_path, trainer.device) if resume and not clear and ckpt_path.exists() else None
    if ckpt is not None and ckpt["config_hash"] != h:  # checked before config.yaml is touched
        raise RunError(f"{out}: checkpoint is of config {ckpt['config_hash']}, not {h}: the config changed")
    if clear and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    start_epoch, record, elapsed = 0, RunRecord(), 0.0
    if ckpt is not None:
        trainer.model.load_state_dict(ckpt["model"])
        trainer.optimizer.load_state_dict(ckpt["optimizer"])
        trainer.pruner.load_state_dict(ckpt["pruner"])
        start_epoch = ckpt["epoch"]
        elapsed = ckpt.get("elapsed", 0.0)
        try:
            record = RunRecord.load(out, upto_epoch=start_epoch, exact=ckpt.get("rows"))
        except RecordError as e:
            raise RunError(str(e)) from None
    else:
        rows0 = snapshot(trainer, 0, {})
        for table, rows in rows0.items():
            record.add(table, rows)
        record.save(out)
        save_checkpoint(trainer, ckpt_path, 0, h, elapsed, rows0)
    bar = tqdm(
        total=cfg.epochs * trainer.steps_per_epoch,
        initial=start_epoch * trainer.steps_per_epoch,
        desc=cfg.name,
        unit="step",
        disable=not progress,
        leave=True,
    )
    try:
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            tic = time.perf_counter()
            train = train_epoch(trainer, epoch, bar)
            _check_finite(trainer.model, epoch)
            elapsed += time.perf_counter() - tic
            rows = snapshot(trainer, epoch, train)
            for table, r in rows.items():
                record.add(table, r)
            m = rows["metrics"][0]
            bar.set_postfix(acc=f"{m['test_accuracy']:.4f}", dead=f"{m['dead_node_fraction']:.2f}")
            record.save(out)
            save_checkpoint(trainer, ckpt_path, epoch, h, elapsed, rows)
    finally:
        bar.close()
    return finish(trainer, out, record, h, elapsed)


def finish(t: Trainer, out: Path, record: RunRecord, h: str, elapsed: float) -> dict:
    cfg = t.cfg
    record.save(out)
    last = record.rows["metrics"][-1]
    layers = [r for r in record.rows["layers"] if r["epoch"] == last["epoch"]]
    example = t.data.x_test[:64].to(t.device)
    compacted, report = compact(t.model, example)
    nodes_total = sum(r["nodes"] for r in layers)
    summary = {
        "name": cfg.name,
        "config_hash": h,
        "seed": cfg.seed,
        "epochs_completed": int(last["epoch"]),
        **{k: v for k, v in last.items() if k.startswith(("test_", "val_"))},
        "weight_sparsity": last["weight_sparsity"],
        "nodes_total": nodes_total,
        "nodes_alive": sum(r["alive"] for r in layers),
        "nodes_in_dead": sum(r["in_dead"] for r in layers),
        "nodes_out_dead": sum(r["out_dead"] for r in layers),
        "dead_node_fraction": last["dead_node_fraction"],
        "dead_fraction_per_layer": {r["layer"]: 1 - r["alive"] / r["nodes"] for r in layers},
        "params_dense": report.params_before,
        "params_compact": report.params_after,
        "flops_dense": report.flops_before,
        "flops_compact": report.flops_after,
        "widths_compact": report.widths_after,
        "compact_max_abs_diff": report.max_abs_diff,
        "data_source": t.data.source,
        "data": t.data.description,
        "prunedyn_version": __version__,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_path": train_path(cfg, t.device),
        "swp_backend": swp_backend(t.pruner),
    }
    atomic_write_json(
        out / "timing.json",
        {
            "train_seconds": round(elapsed, 3),
            "seconds_per_epoch": round(elapsed / max(1, summary["epochs_completed"]), 3),
            "device": str(t.device),
            "gpu": torch.cuda.get_device_name(t.device) if t.device.type == "cuda" else None,
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "numerics": numeric_path(),
            "train": {**dataclasses.asdict(cfg.train), "path": train_path(cfg, t.device)},
        },
    )
    atomic_write_json(out / "summary.json", summary)
    return summary
