"""The search driver dies (SIGKILL) and the search is resumed.

Finished trials are kept and not re-run (same arch ids, same results), interrupted trials are re-run,
the budget completes, the RL controller continues from its learned state, and every file of the run
directory is whole at the moment of the kill and after. Ray processes the driver started either exit
on their own or, while they linger, do not stop the resume. (Supersedes the evolution-searcher kill
test that was in tests/nas/test_search.py: here only the driver is killed, as `kill -9 PID` would.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from evaluation.rundir import STUDY_FILE
from nas.search import STUDY_NAME, run_search
from nas.searchers import distributions
from search_spaces.spaces import get_space
from tests.reliability import procs
from tests.reliability.conftest import NAS, check_run_dir_intact, needs_fmnist, read_csv, tiny_search

pytestmark = [needs_fmnist, pytest.mark.slow]

TRIALS = 22
KILL_AFTER = 17  # finished trials: several PPO updates (batch 2 by the budget rule) before the kill


def _study(run: Path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=STUDY_NAME, storage=JournalStorage(JournalFileBackend(str(run / STUDY_FILE))))


def _done(t) -> bool:
    return t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and "error" in t.user_attrs)


def _finished(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["state"] == "COMPLETE" or (r["state"] == "FAIL" and r["error"])]


def _intended_params(trial, space) -> dict | None:
    """The whole architecture a trial stands for: its params if all were written, else those it was
    enqueued with, else None (killed in the middle of a proposal)."""
    if set(trial.params) == set(distributions(space)):
        return trial.params
    return trial.system_attrs.get("fixed_params")


def _rl_proposal(space, seed: int, trials: list, trial) -> tuple[dict, int]:
    """What a fresh controller, made as the search makes it (the budget rule for TRIALS trials and 2 workers),
    trained on the trials completed before ``trial`` was asked and seeing those then in flight or failed (it
    proposes no architecture the study has), proposes for it."""
    from nas.searchers import make_sampler

    sampler = make_sampler("rl", space, seed=seed, trials=TRIALS, workers=2)
    study = optuna.create_study(sampler=sampler, directions=["maximize"])
    whole = set(distributions(space))
    for t in trials:
        if t.number == trial.number or t.datetime_start is None or t.datetime_start >= trial.datetime_start:
            continue
        if t.datetime_complete is not None and t.datetime_complete < trial.datetime_start:
            study.add_trial(t)  # finished (completed or failed) when ``trial`` was asked
        elif set(t.params) == whole:  # in flight then
            study.add_trial(optuna.trial.create_trial(state=TrialState.RUNNING, params=t.params,
                                                      distributions=t.distributions))
    return sampler.sample_relative(study, trial, distributions(space)), sampler.n_updates


def test_sigkill_of_the_driver_then_resume(tmp_path):
    run = tmp_path / "run"
    args = [NAS, "search", "--run-dir", str(run), "--space", "mobilenetv3_small", "--searcher", "rl",
            "--target-ms", "5",
            "--trials", str(TRIALS), "--steps", "2", "--batch-size", "16", "--holdout", "200", "--train-subset", "400",
            "--deploy-resolution", "32", "--latency", "measured", "--workers", "2", "--top-k", "1"]
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ray_procs: dict[int, int] = {}
    try:
        # kill when enough trials have finished and at least one is being evaluated
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and driver.poll() is None:
            try:
                states = [t.state for t in _study(run).get_trials(deepcopy=False)]
            except (FileNotFoundError, KeyError):  # no journal, or no study in it yet
                states = []
            if states.count(TrialState.COMPLETE) >= KILL_AFTER and TrialState.RUNNING in states:
                break
            time.sleep(0.3)
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        ray_procs = procs.descendants(driver.pid)
        os.kill(driver.pid, signal.SIGKILL)  # the driver only, as `kill -9 PID` would
        driver.wait(30)

        # at the moment of the kill: every file whole, finished trials on record (the journal is the
        # record; trials.csv is rewritten from it after each trial and may lag by the last one)
        check_run_dir_intact(run)
        journal_before = {t.number: t for t in _study(run).get_trials(deepcopy=False) if _done(t)}
        csv_before = {r["number"]: r for r in _finished(read_csv(run / "trials.csv"))}
        assert set(csv_before) <= {str(n) for n in journal_before} and len(csv_before) >= len(journal_before) - 2
        for number, row in csv_before.items():
            assert row["arch_id"] == journal_before[int(number)].user_attrs["arch_id"]
        trials_at_kill = _study(run).get_trials(deepcopy=False)
        interrupted = [t.number for t in trials_at_kill if t.state == TrialState.RUNNING]
        assert len(journal_before) >= KILL_AFTER and interrupted
        orphans_at_resume = procs.alive(ray_procs)

        done = subprocess.run([NAS, "search", "--resume", str(run)], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        space = get_space("mobilenetv3_small", resolution=32, in_channels=1, num_classes=10)
        complete_params = {n for n in interrupted if _intended_params(trials_at_kill[n], space)}
        for number in interrupted:
            expected = "it will run again" if number in complete_params else "while being proposed"
            assert f"trial {number} was interrupted" in done.stdout and expected in done.stdout

        # finished trials kept, with the same results, and not trained again
        trials = _study(run).get_trials(deepcopy=False)
        rows = read_csv(run / "trials.csv")
        after = {r["number"]: r for r in rows}
        for number, t in journal_before.items():
            assert (trials[number].state, trials[number].values, trials[number].user_attrs) == \
                (t.state, t.values, t.user_attrs), number
            assert after[str(number)]["arch_id"] == t.user_attrs["arch_id"]
            assert after[str(number)]["accuracy"] == str(t.user_attrs.get("accuracy", ""))
        before_ids = {t.user_attrs["arch_id"] for t in journal_before.values()}
        for t in trials[max(journal_before) + 1:]:
            if t.user_attrs.get("arch_id") in before_ids and t.state == TrialState.COMPLETE:
                assert "duplicate_of" in t.user_attrs and t.user_attrs.get("train_s", 0.0) == 0.0, t.number
        # interrupted trials: marked, and run again under a new number with the same architecture (one killed
        # while its proposal was being written, which never ran, is replaced by a new proposal instead)
        for number in interrupted:
            assert after[str(number)]["state"] == "INTERRUPTED"
            reruns = [t for t in trials if t.user_attrs.get("rerun_of") == number]
            if number in complete_params:
                assert len(reruns) == 1 and reruns[0].params == _intended_params(trials_at_kill[number], space)
                assert reruns[0].state in (TrialState.COMPLETE, TrialState.FAIL) and reruns[0].number > max(interrupted)
            else:
                assert not reruns
        assert len(_finished(rows)) == TRIALS, "the budget did not complete exactly"
        assert all(r["state"] in ("COMPLETE", "INTERRUPTED") for r in rows), [r["error"] for r in rows if r["error"]]

        # the controller continued from its learned state: each proposal of the resumed process is what a
        # controller trained on the history before it proposes (an untrained one would differ somewhere)
        first_new = max([*journal_before, *interrupted]) + 1
        sampled = [t for t in trials if t.number >= first_new and "fixed_params" not in t.system_attrs]
        assert sampled, "the resumed search proposed nothing new"
        differs_from_untrained = 0
        for t in sampled:
            proposal, updates = _rl_proposal(space, 0, trials, t)
            assert updates >= 2 and proposal == t.params, f"trial {t.number}: not the restored policy's proposal"
            untrained, _ = _rl_proposal(space, 0, [], t)
            differs_from_untrained += sum(untrained[k] != t.params[k] for k in t.params)
        assert differs_from_untrained > 0, "the learned and the initial policy agree here: the check proves nothing"
        # the method itself: proposals made before the kill check out too (a half-written one, in the
        # decisions it has)
        for t in trials[:first_new]:
            if "fixed_params" not in t.system_attrs:
                proposal = _rl_proposal(space, 0, trials, t)[0]
                assert {k: proposal[k] for k in t.params} == t.params, t.number

        # every file whole after the resume; the winner's weights load weights-only
        files = check_run_dir_intact(run)
        from evaluation.evaluate import load_weights

        assert "found.json" in files and load_weights(run / "found.pt")

        # Ray processes of the killed driver: gone on their own (Ray's agents wait out a 60 s GCS timeout)
        left = procs.wait_gone(ray_procs, 180)
        assert not left, f"orphans of the killed driver: {[procs.cmdline(p)[:40] for p in left]}"
        print(f"\nkilled after {len(journal_before)} finished trials, {len(interrupted)} interrupted; "
              f"{len(orphans_at_resume)} Ray processes of the killed driver alive when the resume started, all gone "
              f"by the end; {len(sampled)} proposals after the resume match the restored controller "
              f"({differs_from_untrained} decisions differ from an untrained one)")
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        procs.kill_all(ray_procs)
        log.close()


def test_a_torn_journal_record_is_cut_off_on_resume(tmp_path, no_leftover_processes):
    """A crash in the middle of an append (power loss, full disk) leaves half a record at the end of the
    journal; Optuna would glue the next record to it and the resumed search would fail."""
    run = tmp_path / "run"
    run_search(tiny_search(run, trials=2), echo=None)
    journal = run / STUDY_FILE
    data = journal.read_bytes()
    journal.write_bytes(data[:-25])  # the last record loses its end (and its newline)
    torn = _study(run)  # still readable: Optuna skips the torn line
    running = [t.number for t in torn.trials if t.state == TrialState.RUNNING]
    assert running == [1], "expected the tear to undo the last trial's completion"

    out = run_search(tiny_search(run, trials=3), resume=True, echo=None)

    assert journal.read_bytes().endswith(b"\n")
    files = check_run_dir_intact(run)  # the journal loads afresh: no record glued to the torn one
    rows = read_csv(run / "trials.csv")
    assert [r["state"] for r in rows] == ["COMPLETE", "INTERRUPTED", "COMPLETE", "COMPLETE"]
    rerun = [t for t in files[STUDY_FILE] if t.user_attrs.get("rerun_of") == 1]
    assert len(rerun) == 1 and rerun[0].params == files[STUDY_FILE][1].params
    assert out.completed == 3 and len(_finished(rows)) == 3


def test_a_trial_killed_while_being_proposed_is_replaced_not_rerun_half_made(tmp_path, no_leftover_processes):
    """`study.ask` writes a trial's parameters one journal record at a time: a driver killed in between
    leaves a RUNNING trial with some of them. Re-running it would fix those few decisions for the next
    proposal; it never ran, so a fresh proposal takes its place. An enqueued trial cut short the same way
    (a seed) is re-run whole from the parameters it was enqueued with."""
    run = tmp_path / "run"
    run_search(tiny_search(run, trials=1, seeds=False), echo=None)
    space = get_space("mobilenetv3_small", resolution=32, in_channels=1, num_classes=10)
    dists = distributions(space)
    study = _study(run)
    half = study.ask()  # what a kill in the middle of the loop's study.ask(dists) leaves
    for name in list(dists)[:5]:
        half.suggest_categorical(name, dists[name].choices)
    seed = next(iter(space.seeds().values()))
    study.enqueue_trial(seed, user_attrs={"seed_name": "s"})
    cut_seed = study.ask()
    first = list(dists)[0]
    cut_seed.suggest_categorical(first, dists[first].choices)
    assert len(half.params) == 5 and len(cut_seed.params) == 1

    done = run_search(tiny_search(run, trials=3, seeds=False), resume=True, echo=None)

    trials = _study(run).get_trials(deepcopy=False)
    rows = read_csv(run / "trials.csv")
    assert [r["state"] for r in rows] == ["COMPLETE", "INTERRUPTED", "INTERRUPTED", "COMPLETE", "COMPLETE"]
    reruns = {t.user_attrs["rerun_of"]: t for t in trials if "rerun_of" in t.user_attrs}
    assert list(reruns) == [cut_seed.number] and reruns[cut_seed.number].params == seed
    fresh = [t for t in trials[3:] if "rerun_of" not in t.user_attrs]
    assert len(fresh) == 1 and len(fresh[0].params) == len(dists)
    assert done.completed == 3
    log = (run / "log.txt").read_text()
    assert f"trial {half.number} was interrupted while being proposed" in log
    assert f"trial {cut_seed.number} was interrupted; it will run again" in log
