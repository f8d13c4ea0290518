"""``--workers N``: the N - 1 helper processes a sweep starts on its study (a mixin of
the worker), and their entry point :func:`_helper_main`."""

from __future__ import annotations

import json
import sys


class _Helpers:
    """The worker's helper processes; uses its config, plan, store and sampler offset."""

    def _start_helpers(self) -> None:
        """Start --workers - 1 processes on the study, each its own sampler seed. Processes,
        not threads: a seeded UMAP layout is single-threaded and holds the GIL. New
        interpreters (not fork: this process holds database connections and library
        threads; not multiprocessing: it re-runs an unguarded calling script)."""
        import dataclasses
        import subprocess

        if self.config.join or self.config.workers <= 1:
            return
        for index in range(1, self.config.workers):
            config = dataclasses.replace(self.config, join=True, workers=1, resume=False, progress=False,
                                         study=self.plan.study_name, storage=self.plan.storage_url,
                                         sampler_offset=self.sampler_offset + index)
            order = json.dumps({"config": dataclasses.asdict(config), "tracking_uri": self.store.uri,
                                "experiment": self.plan.experiment_name})
            process = subprocess.Popen([sys.executable, "-c", "from latentscape.jobs.sweep import _helper_main; _helper_main()"],
                                       stdin=subprocess.PIPE, text=True)
            process.stdin.write(order)
            process.stdin.close()
            self.helpers.append(process)

    def _wait_for_helpers(self) -> bool:
        """Wait for the helper processes; True when one of them failed."""
        codes = [process.wait() for process in self.helpers]
        return any(code != 0 for code in codes)

    def _stop_helpers(self) -> None:
        """On the way out (done, failed or interrupted): end helpers still running; each
        ends its trial run KILLED on SIGTERM."""
        import subprocess

        for process in self.helpers:
            if process.poll() is None:
                process.terminate()
        for process in self.helpers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _helper_main() -> None:
    """A --workers process: join the study its first process names on stdin (JSON: the
    config, tracking URI and experiment) and run trials until the study has its target."""
    from latentscape.jobs.cli import quiet_libraries
    from latentscape.jobs.sweep import SweepConfig, sweep
    from latentscape.tracking.runs import open_store

    quiet_libraries()
    order = json.loads(sys.stdin.read())
    try:
        sweep(SweepConfig(**order["config"]), store=open_store(order["tracking_uri"]), experiment=order["experiment"])
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException as error:  # one line, as the CLI prints it; the first process goes on
        from latentscape.tracking.run_log import one_line

        print(f"latentscape sweep (worker process): failed: {one_line(error)}", file=sys.stderr)
        sys.exit(1)
