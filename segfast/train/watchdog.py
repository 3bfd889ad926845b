"""Workers that notice their torchrun launcher is gone.

torchrun's launcher (the elastic agent) is the parent of every worker and tears the group down
when a worker fails; killed itself (SIGKILL, a lost node shell), it leaves the workers training
and writing checkpoints that nobody will resume in order. A daemon thread polls the parent pid:
once the launcher is gone the training loop stops at its next step boundary without saving
(checkpoints are atomic, so none is ever partial), and a worker stuck in a collective with a
lost peer exits after a grace period."""

import logging
import os
import threading
import time

from segfast.train.distributed import any_across

log = logging.getLogger("segfast")


class LauncherLost(RuntimeError):
    """The torchrun launcher of this worker is gone."""


class LauncherWatch:
    def __init__(self, interval: float = 1.0, grace: float = 60.0):
        self.parent, self.lost = os.getppid(), None
        self.interval, self.grace = interval, grace
        threading.Thread(target=self._watch, daemon=True, name="segfast-launcher-watch").start()

    def _watch(self) -> None:
        while os.getppid() == self.parent:
            time.sleep(self.interval)
        self.lost = f"the torchrun launcher (pid {self.parent}) is gone"
        log.error("segfast: %s; stopping at the next step without writing a checkpoint", self.lost)
        time.sleep(self.grace)  # the loop did not get there: blocked in a collective with a lost peer
        log.error("segfast: still running %.0f s after the launcher died; exiting", self.grace)
        os._exit(1)

    def check(self, env) -> None:
        """Collective: every rank stops at the same step when any rank saw the launcher go."""
        if any_across(self.lost is not None, env):
            why = self.lost or "another worker's torchrun launcher is gone"
            raise LauncherLost(
                f"{why}: stopped without writing a checkpoint; relaunch with --resume to continue from the newest one"
            )


def launcher_watch() -> LauncherWatch | None:
    """A watch when this process was started by torchrun (TORCHELASTIC_RUN_ID is set), else None."""
    return LauncherWatch() if "TORCHELASTIC_RUN_ID" in os.environ else None
