"""Checkpoints that can be trusted and resumed: a content checksum, clear load errors, random
state, and each run in its own folder.

* :func:`read_checkpoint` loads with ``weights_only=True`` (never unpickles code) and turns a
  missing, empty, truncated or refused file into a :class:`CheckpointError` naming it;
  :func:`verify` checks the sha256 that ``Recommender.on_save_checkpoint`` records over the
  tensors that decide what a model serves (weights, catalog, serving data, optimizer state).
* :class:`ResumableCheckpoint` (the default configuration's) keeps ``last.ckpt`` current and
  the best checkpoint across resumes; :class:`RandomState`, a callback the CLI always adds,
  and :func:`saved_random_state` make resuming from an end-of-epoch checkpoint exact.
* :func:`run_folder` gives every run its own ``version_N`` folder, safely under concurrency.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import IO, Any, Iterable

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

CHECKSUM_KEY = "attnrec_checksum"
CHECKED_KEYS = ("state_dict", "attnrec_catalog", "attnrec_serving", "optimizer_states")
"""The checkpoint entries the checksum covers (those present when it is saved)."""
RUN_VERSION_ENV = "ATTNREC_RUN_VERSION"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message names the file and what to do."""


# ------------------------------------------------------------------ integrity
def content_digest(checkpoint: dict[str, Any], keys: Iterable[str]) -> str:
    """sha256 over the named entries: every tensor's dtype, shape and bytes, and every other
    value's repr, walked in a fixed order (dict keys sorted)."""
    digest = hashlib.sha256()
    for key in keys:
        _update(digest, key, checkpoint[key])
    return digest.hexdigest()


def _update(digest: Any, path: str, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{path}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(value, dict):
        for key in sorted(value, key=repr):
            _update(digest, f"{path}.{key!r}", value[key])
    elif isinstance(value, (list, tuple)) and all(item is None or isinstance(item, (int, float, str)) for item in value):
        digest.update(f"{path}={value!r}\n".encode())  # ids and titles: one repr is far faster
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _update(digest, f"{path}[{i}]", item)
    else:
        digest.update(f"{path}={value!r}\n".encode())


def add_checksum(checkpoint: dict[str, Any]) -> None:
    """Record the digest of the :data:`CHECKED_KEYS` present (called last when saving)."""
    keys = [key for key in CHECKED_KEYS if key in checkpoint]
    checkpoint[CHECKSUM_KEY] = {"sha256": content_digest(checkpoint, keys), "keys": keys}


def verify(checkpoint: dict[str, Any], source: str) -> None:
    """Raise :class:`CheckpointError` naming ``source`` when the content no longer matches the
    checksum saved with it. A checkpoint without one (written before attnrec recorded it) is
    loaded with a warning."""
    record = checkpoint.get(CHECKSUM_KEY)
    if record is None:
        rank_zero_warn(f"{source}: the checkpoint has no content checksum (written by an older attnrec); not verified")
        return
    missing = [key for key in record["keys"] if key not in checkpoint]
    if missing or content_digest(checkpoint, record["keys"]) != record["sha256"]:
        what = f"its {', '.join(missing)} entries are missing" if missing else "its tensors do not match the checksum"
        raise CheckpointError(
            f"{source}: {what}: the file was modified or corrupted after it was saved. Use another checkpoint "
            "of the run (last.ckpt or best-*.ckpt) or train again."
        )


def read_checkpoint(path: str | os.PathLike | IO[bytes], check: bool = True) -> dict[str, Any]:
    """The checkpoint at ``path`` loaded with ``weights_only=True`` (tensors and plain
    containers only: nothing in it can run code), and with ``check`` its checksum verified.
    Every way a file can fail to be a checkpoint raises :class:`CheckpointError` naming it."""
    opened = hasattr(path, "read")  # an open file, as Lightning also takes: rewound after reading
    name = str(getattr(path, "name", "<file>") if opened else path)
    if not opened and not os.path.isfile(path):  # type: ignore[arg-type]
        raise CheckpointError(f"{name}: no such checkpoint file")
    if not opened and os.path.getsize(path) == 0:  # type: ignore[arg-type]
        raise CheckpointError(
            f"{name}: the file is empty (was the run killed while saving it?); use another checkpoint of the run"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if opened:
            path.seek(0)  # type: ignore[union-attr]
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"{name}: holds objects that safe (weights_only) loading refuses ({reason}); attnrec checkpoints hold "
            "only tensors and plain containers, so this one was not written by attnrec or was altered"
        ) from exc
    except (EOFError, RuntimeError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{name}: not a readable checkpoint, or cut short ({type(exc).__name__}: {exc}); "
            "use another checkpoint of the run"
        ) from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{name}: not a Lightning checkpoint (it has no state_dict)")
    if check:
        verify(checkpoint, name)
    return checkpoint


# ---------------------------------------------------------------------- resume
def random_state() -> dict[str, Any]:
    """The global torch, numpy and Python generators' states as plain containers and tensors
    (``weights_only``-safe, unlike ``np.random.get_state()``'s array)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch.cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "torch.cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch.cuda"])


class RandomState(Callback):
    """Saves the global torch/numpy/Python random states in every checkpoint, to be set back
    (:func:`saved_random_state`, :func:`set_random_state`) before a resumed ``fit`` starts,
    as the CLI does.

    Lightning's Trainer checkpoints keep no generator state, so a resumed run would shuffle
    the training data, drop out and sample negatives differently from an uninterrupted one.
    The state saved at an epoch's end is the one the uninterrupted run's next epoch starts
    from: its data iterator draws a base seed and its ``RandomSampler`` a shuffling seed from
    torch's generator. A resumed ``fit`` creates that iterator while it sets up, before it
    restores callbacks (``load_state_dict`` would come too late) and nothing else draws in
    between, so the state is set just before ``fit`` and resuming from an end-of-epoch
    checkpoint is exact. (Under DDP every process gets rank 0's state, which the ranks share
    when seeded alike.)"""

    def state_dict(self) -> dict[str, Any]:
        return random_state()


def saved_random_state(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The random state a :class:`RandomState` callback saved in ``checkpoint``, if any: give
    it to :func:`set_random_state` right before ``trainer.fit(ckpt_path=...)``."""
    return (checkpoint.get("callbacks") or {}).get(RandomState.__qualname__)


class ResumableCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` for runs that are resumed, each in a folder of its own.

    * ``save_last`` keeps ``last.ckpt`` at the latest epoch: Lightning rewrites it only in a
      step where a top-k checkpoint was saved, so after an epoch that did not improve it
      would still hold an older state.
    * The best score, path and top-k survive a resume into another folder: Lightning
      restores them only when the folder is unchanged, so a resumed run would forget the best
      epoch and take one of its own as best. When the recorded best file still exists, it is
      all restored (Lightning never deletes checkpoints outside its own folder).
    * On Ctrl+C, SIGTERM or a crash only ``last.ckpt`` is written, at the current step
      (resuming from there continues, but is not exact): Lightning's ``save_on_exception``
      also writes a file named like a top-k one (``best-epoch=4.ckpt`` for an interrupted
      epoch 4).

    The overrides call ``ModelCheckpoint``'s own routines for the last checkpoint, so its
    bookkeeping (``last_model_path``, replacing the previous file) stays Lightning's.
    """

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_behind(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_behind(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not self.save_last:
            return super().on_exception(trainer, pl_module, exception)
        if self._should_skip_saving_checkpoint(trainer):  # not fitting, sanity check, or saved at this step
            return
        try:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        except Exception as error:  # the exception being handled is the one to report
            rank_zero_warn(f"{type(exception).__name__} at step {trainer.global_step}: last.ckpt not saved: {error}")
        else:
            rank_zero_warn(f"{type(exception).__name__} at step {trainer.global_step}: saved {self.last_model_path}")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        best = state_dict.get("best_model_path")
        if best and os.path.isfile(best):
            state_dict = {**state_dict, "dirpath": self.dirpath}
        super().load_state_dict(state_dict)

    def _save_last_if_behind(self, trainer: Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def last_checkpoints(folders: Iterable[Path]) -> list[Path]:
    """``last*.ckpt`` files (Lightning's names for them) in the folders, newest first."""
    found = [path for folder in folders for path in Path(folder).glob("last*.ckpt") if path.is_file()]
    return sorted(found, key=lambda path: path.stat().st_mtime, reverse=True)


# ----------------------------------------------------------------- run folders
def run_folder(root: str | os.PathLike, name: str = "lightning_logs") -> str:
    """A new ``version_N`` folder under ``root/name`` for this run, created here, and its name.

    Lightning's loggers pick ``max(existing) + 1`` and create the folder later, so two runs
    started together in one folder both write ``version_0``. ``os.mkdir`` is atomic: a run
    that loses the race takes the next number. Processes that Lightning launches for DDP
    inherit the choice through ``$ATTNREC_RUN_VERSION`` instead of making folders of their own.
    """
    inherited = os.environ.get(RUN_VERSION_ENV)
    if inherited and int(os.environ.get("LOCAL_RANK", "0") or 0) > 0:
        return inherited
    base = Path(root) / name
    base.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[8:]) for p in base.glob("version_*") if p.name[8:].isdigit()]
    number = max(numbers, default=-1) + 1
    while True:
        try:
            (base / f"version_{number}").mkdir()
            break
        except FileExistsError:
            number += 1
    version = f"version_{number}"
    os.environ[RUN_VERSION_ENV] = version
    return version
