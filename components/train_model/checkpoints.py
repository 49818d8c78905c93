"""A training run's checkpoints: ``state.json`` and the last and best epochs' models, in a local
folder, a mounted volume, ``gs://`` or ``s3://``.

After every epoch the compiled model (weights and optimizer state) is written first, then the
state naming it, so a kill at any moment leaves the last complete epoch. The state holds the
history, the kept epoch and the early-stopping count, which Keras's BackupAndRestore would lose.
It is keyed by a fingerprint of the settings and data: a folder of another run is refused. A
failure that would recur with the same settings (a diverged loss) is recorded in it, so that a
retry ends at once with the same error instead of training again.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from components.storage import Folder
from components.train_model.model_folder import MODEL_FILE

STATE_FILE = "state.json"


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class CheckpointMismatchError(ValueError):
    """The checkpoint folder holds a run made with other settings or data."""


def new_state(fingerprint: dict) -> dict:
    """The state of a run before its first epoch."""
    return {"fingerprint": fingerprint, "epoch": 0, "history": {}, "epoch_seconds": [],
            "best_epoch": 0, "best_val_loss": math.inf, "progress_epoch": 0,
            "progress_val_loss": math.inf, "last": None, "best": None, "stopped_early": False}


class Checkpoints:
    """A training run's checkpoint folder."""

    def __init__(self, uri: str, fingerprint: dict):
        self.folder = Folder(uri)
        self.fingerprint = fingerprint

    def load_state(self) -> dict:
        """The saved training state, or a fresh one. Refuses a run made with other settings, and
        raises again the failure an earlier attempt with these settings recorded."""
        text = self.folder.read_text(STATE_FILE)
        if text is None:
            return new_state(self.fingerprint)
        state = json.loads(text)
        saved = state["fingerprint"]
        changed = sorted(k for k in saved.keys() | self.fingerprint.keys()
                         if saved.get(k) != self.fingerprint.get(k))
        if changed:
            raise CheckpointMismatchError(
                f"{self.folder.uri} holds a training run with other {', '.join(changed)}: give "
                f"another checkpoint_dir, or delete that one to start over")
        if state.get("failure"):
            raise TrainingDivergedError(f"{state['failure']} (recorded in {self.folder.uri}/{STATE_FILE} "
                                        "by an earlier attempt with these settings)")
        return state

    def record_failure(self, state: dict, message: str) -> None:
        """Records a failure that would recur, beside the last good epoch."""
        self.folder.write_text(STATE_FILE, json.dumps({**state, "failure": message}, indent=2))

    def load_model(self, name: str):
        """A checkpointed model, compiled, with its optimizer's state."""
        import keras

        from components.train_model import model as _  # noqa: F401 (registers the custom layers)
        from components.train_model import warm_start as _  # noqa: F401, F811 (and the warm start's schedule)

        with tempfile.TemporaryDirectory() as tmp:
            self.folder.download(name, Path(tmp) / MODEL_FILE)
            return keras.models.load_model(Path(tmp) / MODEL_FILE)

    def save(self, model, state: dict, improved: bool) -> None:
        """Saves the epoch's model (as the best too if it improved), then the state naming them."""
        stale = {state["last"], state["best"] if improved else None} - {None}
        with tempfile.TemporaryDirectory() as tmp:
            model.save(Path(tmp) / MODEL_FILE)
            state["last"] = f"epoch-{state['epoch']:04d}.keras"
            self.folder.upload(Path(tmp) / MODEL_FILE, state["last"])
            if improved:
                state["best"] = f"best-{state['epoch']:04d}.keras"
                self.folder.upload(Path(tmp) / MODEL_FILE, state["best"])
        self.folder.write_text(STATE_FILE, json.dumps(state, indent=2))
        for name in stale - {state["last"], state["best"]}:
            self.folder.delete(name)
