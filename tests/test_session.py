"""Session: exact cache reuse over many turns, undo/edit/regenerate/fork, streaming, cancel, the context window,
save/load/export, and bad input through a real sandbox. Uses a random-weight checkpoint and, where the quality of
the code matters, the packaged model."""
import json
import threading
import time
from pathlib import Path

import pytest

import convsynth
from convsynth import ContextWindowError, SessionError
from convsynth.session import MTPB_PREAMBLE, Session

INSTRUCTIONS = ["Assign 3 to x.", "Print x.", "Define a function add(a, b) that returns their sum.",
                "Call add with 1 and 2 and print the result.", "Make a list of the squares of 0 to 9.",
                "Sort the list in reverse order.", "Print the first three items."]


@pytest.fixture
def session(tiny):
    s = Session(tiny[0], temperature=0, max_new_tokens=16)
    yield s
    s.close()


def prompt_before(s: Session, turn_index: int) -> str:
    return s.preamble + "".join(t.text for t in s.turns[:turn_index]) + \
        "".join(f"# {line}\n" for line in s.turns[turn_index].instruction.splitlines())


def test_cache_reuse_is_exact_over_seven_turns(session):
    cg = session.model
    for i, instruction in enumerate(INSTRUCTIONS):
        turn = session.ask(instruction)
        prompt = prompt_before(session, i)
        fresh = cg.complete(prompt, temperature=0, max_new_tokens=16, stop="codegen")
        assert turn.code == fresh, f"turn {i} differs from a fresh model on the same prompt text"
        ids = cg.encode(prompt)
        assert turn.stats.cached_tokens + turn.stats.prefill_tokens == len(ids)
        if i:
            assert turn.stats.cached_tokens > 0
        # what the cache holds is always a prefix of the session text's tokens
        assert session.prefix.ids == cg.encode(session.text)[:len(session.prefix.ids)]
        assert session.prefix.cache.length == len(session.prefix.ids)


def test_undo_rewinds_without_recomputing(session):
    for ins in INSTRUCTIONS[:3]:
        session.ask(ins)
    cache = session.prefix.cache
    before = session.text
    undone = session.undo()
    assert undone.instruction == INSTRUCTIONS[2] and len(session.turns) == 2
    assert session.prefix.cache is cache
    assert session.prefix.ids == session.model.encode(session.text)[:session.cached_tokens]
    again = session.ask(INSTRUCTIONS[2])
    assert session.text == before and again.code == undone.code
    n_instr = len(session.model.encode(f"# {INSTRUCTIONS[2]}\n"))
    assert again.stats.prefill_tokens <= n_instr + 2


def test_edit_regenerates_one_step_keeps_the_later_ones_and_reuses_the_prefix(session):
    cg = session.model
    for ins in INSTRUCTIONS[:4]:
        session.ask(ins)
    later = [t.code for t in session.turns[2:]]
    prefix_tokens = len(cg.encode(session.preamble + session.turns[0].text))
    turn = session.edit(1, "Print x twice.")
    assert [t.instruction for t in session.turns] == [INSTRUCTIONS[0], "Print x twice.", *INSTRUCTIONS[2:4]]
    assert session.turns[1] is turn and [t.code for t in session.turns[2:]] == later  # code kept as it was
    assert turn.code == cg.complete(prompt_before(session, 1), temperature=0, max_new_tokens=16, stop="codegen")
    assert turn.stats.cached_tokens >= prefix_tokens - 2  # the cache was reused up to the change
    assert session.prefix.ids == cg.encode(session.text)[:session.cached_tokens]
    nxt = session.ask(INSTRUCTIONS[4])  # the model sees the new text, later steps included
    assert nxt.code == cg.complete(prompt_before(session, 4), temperature=0, max_new_tokens=16, stop="codegen")

    session.add_code("y = 1")  # written by hand: stays when the steps after an edit are regenerated
    session.edit(0, "Assign 4 to x.", regenerate_following=True)
    assert session.turns[0].instruction == "Assign 4 to x." and session.turns[-1].code == "y = 1\n"
    for i in range(1, 5):  # each later generated step is what a fresh model writes after the new text
        assert session.turns[i].code == cg.complete(prompt_before(session, i), temperature=0, max_new_tokens=16,
                                                    stop="codegen"), i
    with pytest.raises(SessionError, match="out of range"):
        session.edit(6, "Nope.")
    with pytest.raises(SessionError, match="out of range"):
        session.edit(-7, "Nope.")
    assert len(session.turns) == 6  # nothing lost


def test_regenerate_draws_a_new_sample(tiny):
    s = Session(tiny[0], temperature=1.0, seed=5, max_new_tokens=12)
    first = s.ask("Assign 3 to x.")
    second = s.regenerate()
    assert len(s.turns) == 1 and s.turns[0] is second
    assert second.code != first.code
    s2 = Session(tiny[0], temperature=1.0, seed=5, max_new_tokens=12)
    assert s2.ask("Assign 3 to x.").code == first.code  # seeded: reproducible


def test_add_code_is_seen_by_the_next_turn(session):
    session.add_code("numbers = [3, 1, 2]")
    session.ask("Sort the numbers.")
    assert "numbers = [3, 1, 2]\n\n\n# Sort the numbers.\n" in session.text


def test_fork_is_independent(session):
    for ins in INSTRUCTIONS[:3]:
        session.ask(ins)
    parent_text, parent_ids = session.text, session.prefix.ids
    f = session.fork(at=1)
    assert len(f.turns) == 1 and f.turns[0].code == session.turns[0].code
    t = f.ask("Print x plus one.")
    assert session.text == parent_text and session.prefix.ids == parent_ids
    assert t.stats.cached_tokens > 0 and f.text.startswith(session.preamble + session.turns[0].text)
    f.close()


def test_streaming_pieces_make_the_code(session):
    pieces = []
    turn = session.ask(INSTRUCTIONS[0], on_text=pieces.append)
    assert "".join(pieces) == turn.code
    gen = session.ask_stream(INSTRUCTIONS[1])
    streamed = []
    try:
        while True:
            streamed.append(next(gen))
    except StopIteration as done:
        assert "".join(streamed) == done.value.code


def test_cancel_from_another_thread_keeps_the_session_consistent(tiny):
    s = Session(tiny[0], temperature=0, max_new_tokens=1500, stop=None)
    s.ask("Assign 3 to x.", max_new_tokens=8)
    started = threading.Event()

    def on_text(_):
        started.set()

    box = {}
    th = threading.Thread(target=lambda: box.setdefault("turn", s.ask("Loop forever.", on_text=on_text, run=True)))
    th.start()
    assert started.wait(60)
    s.cancel()
    th.join(60)
    turn = box["turn"]
    assert turn.stats.finish_reason == "cancelled" and turn.stats.generated_tokens < 1500
    assert turn.result is None and s._sandbox is None  # run=True, but a stopped turn is not run
    assert len(s.turns) == 2
    assert s.prefix.ids == s.model.encode(s.text)[:len(s.prefix.ids)]
    nxt = s.ask("Print x.", max_new_tokens=8)
    assert nxt.code == s.model.complete(prompt_before(s, 2), temperature=0, max_new_tokens=8, stop=None)


def test_a_stop_during_an_edit_stops_the_regeneration_of_the_following_steps(tiny):
    """edit(regenerate_following=True) regenerates the later steps one by one; a Stop while the second of them
    is generated ends the edit there: that step keeps what it had (finish_reason 'cancelled', and edit returns
    it, so the widget drops the stopped edit), the steps after it keep their old code and none is generated."""
    s = Session(tiny[0], temperature=0, max_new_tokens=8, stop=None)
    for text in ("Assign 3 to x.", "Print x.", "Add one to x."):
        s.ask(text)
    old_last = s.turns[2].code
    box = {}
    th = threading.Thread(target=lambda: box.setdefault("turn", s.edit(0, "Assign 4 to x.",
                                                                       regenerate_following=True,
                                                                       max_new_tokens=400)))
    th.start()
    deadline = time.monotonic() + 60
    while not (s.turns and s.turns[0].instruction == "Assign 4 to x." and len(s.turns) == 1):
        assert time.monotonic() < deadline and th.is_alive()  # step 1 is done: step 2 is being generated
        time.sleep(0.001)
    s.cancel()
    th.join(60)
    turn = box["turn"]
    assert turn is s.turns[1] and turn.stats.finish_reason == "cancelled"
    assert [t.instruction for t in s.turns] == ["Assign 4 to x.", "Print x.", "Add one to x."]
    assert s.turns[2].code == old_last and s.turns[2].stats.finish_reason != "cancelled"
    s.undo()
    assert s.turns[0].instruction == "Assign 3 to x." and s.turns[2].code == old_last


def test_a_step_that_cannot_replay_shows_as_not_run(tiny, tmp_path):
    """After a change the sandbox replays the kept steps; one that now fails (its input file is gone) and the
    steps after it lose their results, with a warning, instead of showing 'ok' over an empty namespace."""
    (tmp_path / "in.txt").write_text("hello")
    s = Session(tiny[0], cwd=tmp_path)
    s.add_code("data = open('in.txt').read()")
    s.add_code("y = len(data)")
    s.add_code("z = 1")
    assert all(r.ok for r in s.run())
    (tmp_path / "in.txt").unlink()
    with pytest.warns(RuntimeWarning, match="From step 1 on the steps show as not run"):
        s.delete(2)
    assert [t.result for t in s.turns] == [None, None]
    first = s.run()[0]
    assert first.status == "error" and first.error.startswith("FileNotFoundError")
    s.close()


def test_a_stop_while_rerun_replays_the_earlier_steps_stops_the_rerun(tiny, tmp_path):
    """rerun(i) first brings the sandbox back to the steps before i (a replay), then runs; a Stop during the
    replay must end it there, not be cleared by the run that follows (the widget's Run again kept running)."""
    s = Session(tiny[0], cwd=tmp_path)
    started = tmp_path / "started"
    s.add_code(f"import time\nopen({str(started)!r}, 'a').write('x')\ntime.sleep(4)")
    s.add_code("print('second')")
    assert [r.ok for r in s.run()] == [True, True]
    started.unlink()
    done = []
    th = threading.Thread(target=lambda: done.append(s.rerun(1)))
    th.start()
    deadline = time.monotonic() + 60
    while not started.exists():  # the replay of step 1 is running
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t0 = time.monotonic()
    s.cancel()
    th.join(60)
    assert done == [[]] and time.monotonic() - t0 < 3  # nothing ran after the Stop, and it did not wait
    assert s.turns[1].result is None
    s.close()


def test_context_window_error_and_drop_oldest(tiny):
    cg = tiny[0]
    s = Session(cg, temperature=0, max_new_tokens=64)
    for i in range(8):  # about 2400 tokens
        s.add_code(f"v{i} = [" + ", ".join(str(j) for j in range(150)) + "]")
    with pytest.raises(ContextWindowError, match=r"uses \d+ of 2048 tokens"):
        s.ask("Print v0.")
    assert len(s.turns) == 8  # nothing lost
    s2 = Session(cg, temperature=0, max_new_tokens=64, overflow="drop_oldest")
    for t in s.turns:
        s2.add_code(t.code)
    turn = s2.ask("Print v7.")
    assert s2.turns[-1] is turn and len(s2.dropped) >= 1 and s2.text.startswith(MTPB_PREAMBLE)
    assert len(cg.encode(s2.text)) <= 2048


def test_bad_instructions(session):
    session.ask(INSTRUCTIONS[0])
    with pytest.raises(SessionError, match="empty"):
        session.ask("   ")
    t = session.ask("Compute the total.\nThen print it.")
    assert "# Compute the total.\n# Then print it.\n" in session.text
    t2 = session.ask('Write a docstring """like this""" for x.')
    assert '# Write a docstring """like this""" for x.\n' in session.text
    assert len(session.turns) == 3 and t is session.turns[1] and t2 is session.turns[2]


def test_undo_on_an_empty_session(session):
    with pytest.raises(SessionError, match="nothing to undo"):
        session.undo()
    with pytest.raises(SessionError, match="nothing to regenerate"):
        session.regenerate()


def test_save_load_and_export(session, tmp_path, checkpoints):
    import nbformat
    session.ask(INSTRUCTIONS[0])
    session.add_code("x = 20\nprint(x * 2)")
    session.turns[-1].expect_output = "40"
    session.run()
    path = session.save(tmp_path / "s.json")
    data = json.loads(path.read_text())
    assert data["format"] == "convsynth-session" and len(data["turns"]) == 2
    back = Session.load(path, session.model)
    assert back.text == session.text and back.turns[1].result.stdout == "40\n"
    assert back.turns[1].result.expectation is True
    back.add_code("print(x + 2)")
    assert back.run()[-1].stdout == "22\n"  # the loaded session's earlier steps were replayed
    back.close()
    nb_path = session.to_notebook(tmp_path / "s.ipynb")
    nb = nbformat.read(nb_path, as_version=4)
    nbformat.validate(nb)
    kinds = [c.cell_type for c in nb.cells]
    assert kinds.count("code") == 3 and kinds.count("markdown") == 2
    assert nb.cells[-1].outputs[0]["text"] == "40\n"
    assert session.to_python().startswith(MTPB_PREAMBLE) and session.to_python().endswith("print(x * 2)\n")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SessionError, match="not valid JSON"):
        Session.load(tmp_path / "bad.json", session.model)
    (tmp_path / "other.json").write_text(json.dumps(dict(data, format="something-else")))
    with pytest.raises(SessionError, match="not a saved convsynth session"):
        Session.load(tmp_path / "other.json", session.model)
    other = convsynth.load(checkpoints("heads16")[0])
    with pytest.raises(SessionError, match="another model"):
        Session.load(path, other)


def test_bad_code_through_the_sandbox_loses_nothing(tiny):
    s = Session(tiny[0], timeout=3, memory_limit=1 * 2**30)
    s.add_code("total = 10")
    steps = {
        "syntax": ("def broken(:\n    pass", "error"),
        "loop": ("while True:\n    pass", "timeout"),
        "exit": ("import os\nos._exit(1)", "crashed"),
        "hog": ("hog = bytearray(3 * 2**30)", "memory"),
        "stdin": ("name = input('name? ')", "error"),
        "flood": ("print('x' * 10_000_000)", "ok"),
    }
    for name, (code, _) in steps.items():
        s.add_code(code)
        s.add_code("print(total)")
    results = s.run()
    assert results[0].ok
    for k, (name, (code, status)) in enumerate(steps.items()):
        res, after = results[1 + 2 * k], results[2 + 2 * k]
        assert res.status == status, (name, res.status, res.note)
        assert res.note or status == "ok"
        assert after.stdout == "10\n", f"earlier state lost after {name}: {after}"
    assert results[-2].truncated and len(results[-2].stdout) <= 200_000
    assert len(s.turns) == 13
    s.undo()
    s.undo()  # undoing a step that ran resets the sandbox to the kept steps
    s.add_code("print(total + 1)")
    assert s.run()[-1].stdout == "11\n"
    s.close()


def test_expectations(tiny):
    s = Session(tiny[0])
    s.add_code("x = 2 + 2")
    s.turns[-1].check = "assert x == 4"
    s.add_code("print(x)")
    s.turns[-1].expect_output = "5"
    r = s.run()
    assert r[0].expectation is True and r[1].expectation is False and r[1].status == "expectation_failed"
    s.close()


def test_turn_prefills_only_its_instruction_on_the_packaged_model():
    """With a trained model the code it writes re-tokenizes the same way, so a turn prefills its instruction
    plus at most a couple of boundary tokens."""
    cg = convsynth.load()
    s = Session(cg, temperature=0, max_new_tokens=48)
    for i, ins in enumerate(INSTRUCTIONS[:6]):
        turn = s.ask(ins)
        if i == 0:
            continue
        n_instr = len(cg.encode("".join(f"# {line}\n" for line in ins.splitlines())))
        assert turn.stats.prefill_tokens <= n_instr + 3, (i, turn.stats, repr(s.turns[i - 1].code))


def test_run_through_a_step_and_stop_between_steps(tiny, tmp_path):
    s = Session(tiny[0], timeout=60, cwd=tmp_path)  # the step below writes there: writable also when isolated
    s.add_code("x = 1")
    s.add_code("x += 1\nprint(x)")
    s.add_code("print(x * 10)")
    assert [r.stdout for r in s.run(upto=1)] == ["", "2\n"]
    assert s.turns[2].result is None  # not reached: the last step waits
    with pytest.raises(SessionError, match="no step 3"):
        s.run(upto=3)
    fresh = Session(tiny[0])
    fresh.add_code("y = 1")
    with pytest.raises(SessionError, match="no step 1"):
        fresh.run(upto=1)
    assert fresh.preamble_result is None and fresh._sandbox is None  # refused before anything ran
    fresh.close()
    assert s.run(upto=-1)[0].stdout == "20\n"

    started = Path(s.sandbox.workdir) / "started"  # the step may write only in its working directory
    s.add_code(f"import time\nopen({str(started)!r}, 'w').close()\ntime.sleep(60)")
    s.add_code("print('after')")
    done = []
    t = threading.Thread(target=lambda: done.append(s.run()))
    t.start()
    deadline = time.monotonic() + 60
    while not started.exists():  # the sleep step is running
        assert time.monotonic() < deadline
        time.sleep(0.05)
    s.cancel()
    t.join(60)
    assert not t.is_alive()
    [slept] = done[0]
    assert slept.status == "error" and not slept.timed_out
    assert s.turns[-1].result is None, "a cancelled run must not go on to the next step"
    assert s.run()[0].stdout == "after\n"  # the next run picks up where it stopped, state kept
    s.add_code("print(x)")
    assert s.run()[0].stdout == "2\n"
    s.close()


# ------------------------------------------------------------------ reliability (issue 18)


def within(fn, seconds: float = 120):
    """Run fn in a thread: a deadlock fails the test instead of freezing the suite."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the test
            box["error"] = e
    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(seconds)
    assert not th.is_alive(), "deadlock: it never returned"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def test_streams_hold_no_lock_while_suspended(tiny):
    cg = tiny[0]
    s = Session(cg, temperature=0, max_new_tokens=6, stop=None)
    other = s.fork()
    pairs = within(lambda: list(zip(s.ask_stream("Assign 1 to x."), other.ask_stream("Assign 1 to x."))))
    assert len(pairs) == 6 and all(a == b for a, b in pairs)  # same model, same history, greedy: same pieces
    assert len(s.turns) == 1 and not other.turns  # zip left the second stream unfinished: it keeps nothing
    # a callback that generates with the same model, or asks another session
    third = Session(cg, temperature=0, max_new_tokens=4, stop=None)
    seen = []
    turn = within(lambda: s.ask("Print x.", on_text=lambda p: seen.append(cg.complete("x", max_new_tokens=2)
                                                                       + third.ask("Add one.").code)))
    assert seen and len(third.turns) == len(seen) and s.turns[-1] is turn
    # a callback that acts on its own session gets an error, not a deadlock
    with pytest.raises(SessionError, match="middle of a turn"):
        within(lambda: s.ask("Print x.", on_text=lambda p: s.undo()))
    # a half-consumed stream blocks nobody else; its own session says why it is busy; closing it loses nothing
    n = len(s.turns)
    g = s.ask_stream("Print x twice.")
    next(g)
    assert within(lambda: other.ask("Print x.")).code is not None
    assert within(lambda: cg.complete("def f():", max_new_tokens=2)) is not None
    with pytest.raises(SessionError, match="middle of a turn"):
        s.ask("Print x.")
    g.close()
    assert len(s.turns) == n
    # a stream started here and finished in another thread
    g = s.ask_stream("Print x again.")
    next(g)
    within(lambda: list(g))
    assert len(s.turns) == n + 1 and s.turns[-1].instruction == "Print x again."
    within(lambda: s.ask("Print it."))
    s.ask("And again.")  # the session is not left locked
    assert s.text == s.preamble + "".join(t.text for t in s.turns)


def test_a_stream_left_half_read_makes_other_threads_fail_not_hang(tiny, monkeypatch):
    """A stream whose reader went away (a cell that took one piece) can only finish if that reader goes on:
    another thread's call (the widget's Generate) waits a little, then fails with a line that says what to do,
    also after a Stop, instead of waiting forever. Closing the stream frees the session and loses nothing."""
    import convsynth.session as session_module
    monkeypatch.setattr(session_module, "STALLED_S", 0.5)
    s = Session(tiny[0], temperature=0, max_new_tokens=6, stop=None)
    s.ask("Assign 1 to x.")
    g = s.ask_stream("Print x.")
    next(g)
    with pytest.raises(SessionError, match="half-read"):
        within(lambda: s.ask("Print x twice."))
    s.cancel()
    with pytest.raises(SessionError, match="half-read"):
        within(lambda: s.regenerate(0))
    assert len(s.turns) == 1
    g.close()
    assert within(lambda: s.ask("Print x twice.")).code is not None and len(s.turns) == 2


def test_edit_and_regenerate_validate_before_dropping_turns(session):
    session.ask(INSTRUCTIONS[0])
    session.ask(INSTRUCTIONS[1])
    before = [(t.instruction, t.code) for t in session.turns]
    for bad in (dict(temperature=-1), dict(top_p=2), dict(tempreature=0.5)):
        with pytest.raises(convsynth.SamplingError):
            session.edit(0, "Assign 4 to x.", **bad)
        with pytest.raises(convsynth.SamplingError):
            session.regenerate(**bad)
    with pytest.raises(ContextWindowError, match="no turn was changed"):
        session.edit(0, "Assign 4 to x. " * 1000)
    with pytest.raises(SessionError):
        session.edit(5, "Assign 4 to x.")
    assert [(t.instruction, t.code) for t in session.turns] == before


def test_save_that_fails_part_way_keeps_the_previous_file(session, tmp_path):
    import resource
    import signal
    session.ask(INSTRUCTIONS[0])
    path, nb = session.save(tmp_path / "s.json"), session.to_notebook(tmp_path / "s.ipynb")
    good, good_nb = path.read_text(), nb.read_text()
    session.add_code("x = '" + "y" * 200_000 + "'")
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))  # the disk is "full" after 100 kB
    try:
        with pytest.raises(SessionError, match=r"cannot write the session to .*s\.json: File too large\.$"):
            session.save(path)
        with pytest.raises(SessionError, match=r"cannot write the notebook to .*s\.ipynb: File too large\.$"):
            session.to_notebook(nb)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert path.read_text() == good and nb.read_text() == good_nb
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.ipynb", "s.json"]  # no temporary file left


def test_drop_oldest_loses_nothing(tiny, tmp_path):
    cg = tiny[0]
    s = Session(cg, temperature=0, max_new_tokens=64, overflow="drop_oldest", memory_limit=None)
    for i in range(8):  # about 2400 tokens: the first ask drops some
        s.add_code(f"v{i} = [" + ", ".join(str(j) for j in range(150)) + "]")
    turns_before = len(s.turns)
    with pytest.raises(ContextWindowError, match="cannot fit even"):
        s.ask("Print v7. " * 700)  # can never fit: nothing may move to dropped
    assert len(s.turns) == turns_before and not s.dropped
    s.ask("Print v7.")
    assert len(s.dropped) >= 1 and "v0 = [" in s.to_python() and "v0 = [" in s.to_notebook(tmp_path / "n.ipynb") \
        .read_text()
    s2 = Session.load(s.save(tmp_path / "s.json"), cg)
    assert [t.code for t in s2.dropped] == [t.code for t in s.dropped] and s2.to_python() == s.to_python()
    s.run()  # the dropped steps are part of the program: they run first
    assert all(t.result is not None for t in s.dropped + s.turns)
    s.undo()  # the generated step ran: the sandbox restarts and replays, dropped steps included
    s.add_code("print(len(v0))")
    assert s.run()[-1].stdout == "150\n"
    s.close()


def test_a_preamble_that_timed_out_runs_again(tiny):
    s = Session(tiny[0], preamble="import time\ntime.sleep(2)\nX = 1\n", timeout=1, memory_limit=None)
    s.add_code("print(X)")
    r = s.run()[0]
    assert r.error.startswith("NameError") and "preamble did not run (timeout" in r.note
    s.add_code("print(X + 1)")
    assert s.run(timeout=10)[0].stdout == "2\n" and s.preamble_result.ok
    s.close()


def test_line_breaks_in_an_instruction_stay_comments(session):
    session.ask("Sort.\rimport os; print('INJECTED')")
    session.ask("Print.\u2028print('INJECTED 2')\x0cprint(3)")
    for line in session.to_python().splitlines():
        assert "INJECTED" not in line or line.startswith("#"), line
    assert session.turns[0].instruction == "Sort.\nimport os; print('INJECTED')"


def test_a_callable_stop_is_not_saved_as_a_regex(tiny, tmp_path):
    def stop(text):
        return None
    s = Session(tiny[0], stop=stop)
    path = s.save(tmp_path / "s.json")
    with pytest.raises(SessionError, match="callable stop rule .*stop=") as err:
        Session.load(path, tiny[0])
    assert "\n" not in str(err.value)
    assert Session.load(path, tiny[0], stop=stop).stop is stop


def test_a_huge_session_is_refused_before_tokenizing(tiny, tmp_path):
    cg = tiny[0]
    s = Session(cg)
    s.add_code("x = '" + "a" * 3_000_000 + "'")  # 3 MB: tokenizing it alone would take about 1 GB
    path = s.save(tmp_path / "big.json")
    s2 = Session.load(path, cg)
    with pytest.raises(ContextWindowError, match="characters"):
        s2.ask("Print x.")
    assert len(s2.turns) == 1
    data = json.loads(path.read_text())
    data["overflow"] = "drop_oldest"
    path.write_text(json.dumps(data))
    s3 = Session.load(path, cg)  # bounded at load: the step that cannot fit is dropped from the prompt
    assert len(s3.dropped) == 1 and not s3.turns and "a" * 1000 in s3.to_python()


def _saved(session, tmp_path):
    session.add_code("x = 1", "Assign 1 to x.")
    return json.loads(session.save(tmp_path / "good.json").read_text())


BAD_FILES = {
    "turns as a dict": (lambda d: d.update(turns={"0": d["turns"][0]}), "'turns' is dict"),
    "turns as a string": (lambda d: d.update(turns="x = 1"), "'turns' is str"),
    "a null turn": (lambda d: d["turns"].append(None), "turn 1 is null"),
    "result as a string": (lambda d: d["turns"][0].update(result="ok"), "'result' is str"),
    "model as a string": (lambda d: d.update(model="n_embd"), "'model' is str"),
    "an invalid regex stop": (lambda d: d.update(stop="(["), "not a valid regular expression"),
    "code as an int": (lambda d: d["turns"][0].update(code=1), "'code' is int"),
    "instruction as an int": (lambda d: d["turns"][0].update(instruction=2), "'instruction' is int"),
    "no code": (lambda d: d["turns"][0].pop("code"), "no 'code' field"),
    "preamble null": (lambda d: d.update(preamble=None), "'preamble' is null"),
    "timeout as text": (lambda d: d.update(timeout="ten"), "'timeout' is str"),
    "negative timeout": (lambda d: d.update(timeout=-1), "timeout=-1"),
    "sampling out of range": (lambda d: d["sampling"].update(top_p=3), "top_p=3"),
    "an unknown version": (lambda d: d.update(version=2), "version 2; this convsynth reads version 1"),
    "no version": (lambda d: d.pop("version"), "version None"),
    "an unknown status": (lambda d: d["turns"][0].update(result={"status": "great"}), "'great' is not one of"),
    "outputs as a string": (lambda d: d["turns"][0]["result"].update(outputs="abc"), "'outputs' is str"),
    "an output that is not an object": (lambda d: d["turns"][0]["result"].update(outputs=["x"]),
                                        "'outputs' must be a list of objects"),
    "a stat as text": (lambda d: d["turns"][0]["stats"].update(time_to_first_token="0.1"),
                       "stats: 'time_to_first_token' is str"),
    "a count as a float": (lambda d: d["turns"][0]["stats"].update(generated_tokens=1.5),
                           "'generated_tokens' is float"),
    "a preamble result of an unknown status": (lambda d: d.update(preamble_result={"status": "weird"}),
                                               "preamble_result: status 'weird' is not one of"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_malformed_session_files_name_the_field(session, tmp_path, case):
    data = _saved(session, tmp_path)
    data["turns"][0]["result"] = {"status": "ok"}
    change, message = BAD_FILES[case]
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SessionError, match=message.replace("(", r"\(").replace("[", r"\[")) as err:
        Session.load(path, session.model)
    assert "\n" not in str(err.value)


def test_unreadable_session_paths(session, tmp_path):
    with pytest.raises(SessionError, match="is a directory"):
        Session.load(tmp_path, session.model)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SessionError, match="nested too deeply|not valid JSON"):
        Session.load(deep, session.model)


def test_bad_paths_and_arguments_get_one_line(session, tiny, tmp_path):
    """Common slips give one SessionError line saying what to do, not a traceback naming a temporary file."""
    cases = [(lambda: session.save(tmp_path / "missing" / "s.json"), "the folder .*missing does not exist"),
             (lambda: session.save(tmp_path), "is a folder: give a file name inside it"),
             (lambda: session.to_notebook(tmp_path / "missing" / "s.ipynb"), "notebook .*does not exist"),
             (lambda: Session("convsynth-tiny"), "Session needs a loaded model, not str"),
             (lambda: Session(tiny[0], auto_fix="x"), "auto_fix='x' must be a whole number"),
             (lambda: session.fork(at="1"), r"fork\(at='1'\): at is a turn index")]
    for call, message in cases:
        with pytest.raises(SessionError, match=message) as err:
            call()
        assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())  # no temporary file was left behind
    assert session.save(tmp_path / "s.json").is_file()


def test_limits_are_refused_when_the_session_is_made(tiny):
    with pytest.raises(SessionError, match="memory_limit=10 must be a number of bytes"):
        Session(tiny[0], memory_limit=10)
    with pytest.raises(SessionError, match="timeout=-1"):
        Session(tiny[0], timeout=-1)
    with pytest.raises(SessionError, match="timeout=-2"):
        Session(tiny[0]).run(timeout=-2)
    with pytest.raises(convsynth.errors.UsageError, match="overflow="):
        Session(tiny[0], overflow="drop_newest")


def test_a_dropped_session_does_not_freeze_the_process(checkpoints):
    import subprocess
    import sys
    from helpers import ROOT
    code = ("import gc, sys, convsynth\ncg = convsynth.load(sys.argv[1], fast=False)\n"
            "s = convsynth.Session(cg); s.add_code('x = 1'); s.run(); pid = s.sandbox.pid\n"
            "s = None; gc.collect()\nprint('collected', pid, flush=True)\n")
    out = subprocess.run([sys.executable, "-c", code, str(checkpoints("tiny")[0])], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("collected"), out.stderr[-2000:]


# ------------------------------------------------------------------ edit, undo/redo, autosave (issue 17)


def test_undo_and_redo_every_kind_of_change(session):
    cg = session.model
    texts = [session.text]
    session.ask(INSTRUCTIONS[0])
    texts.append(session.text)
    session.ask(INSTRUCTIONS[1])
    texts.append(session.text)
    session.add_code("z = 7", "Assign 7 to z.")
    texts.append(session.text)
    session.edit(0, "Assign 5 to x.")
    texts.append(session.text)
    edited = session.edit_code(1, "print(x + 1)")
    assert edited.edited and session.turns[1] is edited and edited.instruction == INSTRUCTIONS[1]
    texts.append(session.text)
    session.delete(2)
    texts.append(session.text)
    session.regenerate(0)
    texts.append(session.text)
    assert session.history.undo_what == "regenerate"
    for expected in reversed(texts[:-1]):
        session.undo()
        assert session.text == expected
        assert session.prefix.ids == cg.encode(session.text)[:session.cached_tokens]
    with pytest.raises(SessionError, match="nothing to undo"):
        session.undo()
    for expected in texts[1:]:
        session.redo()
        assert session.text == expected
    with pytest.raises(SessionError, match="nothing to redo"):
        session.redo()
    session.undo()
    session.undo()  # back before the delete: the code edit is the last change
    assert session.turns[1].edited and session.turns[2].code == "z = 7\n"
    nxt = session.ask(INSTRUCTIONS[2])  # a new change after undo: the undone ones cannot be redone any more
    assert nxt.code == cg.complete(prompt_before(session, 3), temperature=0, max_new_tokens=16, stop="codegen")
    with pytest.raises(SessionError, match="nothing to redo"):
        session.redo()
    undone = session.undo()  # undo of a generated step returns it, as before
    assert undone is nxt and len(session.turns) == 3


def test_edit_code_and_rerun_through_the_sandbox(tiny):
    s = Session(tiny[0], timeout=2, cwd=None)  # a private folder: the step below writes a file in it
    s.add_code("n = 1")
    s.add_code("n += 1\nprint(n)")
    s.add_code("import os, time\nif not os.path.exists('go'):\n    time.sleep(60)\nprint('done', n)")
    first = s.run()
    assert [r.status for r in first] == ["ok", "ok", "timeout"] and first[1].stdout == "2\n"
    (__import__("pathlib").Path(s.sandbox.workdir) / "go").touch()
    assert [r.stdout for r in s.rerun(2)] == ["done 2\n"]  # a timed-out step runs again, state kept
    assert [r.stdout for r in s.rerun(1)] == ["2\n"]  # not 3: the sandbox went back to before step 1 first
    assert s.turns[2].result is None  # rerunning step 1 took the results after it: they must run again

    s.edit_code(0, "n = 10")
    assert s.turns[0].edited and all(t.result is None for t in s.turns)
    assert [r.stdout for r in s.run()] == ["", "11\n", "done 11\n"]
    s.undo()  # back to n = 1, with the results those steps had; the sandbox replays them
    assert not s.turns[0].edited and s.turns[1].result.stdout == "2\n"
    s.add_code("print(n)")
    assert [r.stdout for r in s.run()] == ["done 2\n", "2\n"]  # step 2 had no result then: it runs now
    with pytest.raises(SessionError, match="needs some code"):
        s.edit_code(0, "  \n")
    assert s.edit_code(0, "n = 1") is s.turns[0]  # the same code: no change recorded
    assert s.history.undo_what == "add code"
    s.close()


def test_autosave_and_resume(tiny, tmp_path):
    cg = tiny[0]
    path = tmp_path / "nb" / ".convsynth" / "demo-1.json"
    seen = []
    s = Session(cg, temperature=0, max_new_tokens=8, autosave=path)
    s.on_change(seen.append)
    assert not path.exists()  # nothing to save before the first change
    s.ask("Assign 3 to x.")
    assert json.loads(path.read_text())["turns"][0]["instruction"] == "Assign 3 to x."
    s.add_code("print(3)")
    s.edit_code(1, "print(4)")
    s.run()
    data = json.loads(path.read_text())
    assert data["turns"][1]["edited"] is True and data["turns"][1]["result"]["stdout"] == "4\n"
    s.undo()
    assert json.loads(path.read_text())["turns"][1]["code"] == "print(3)\n"
    assert seen == ["generate", "add code", "code edit", "run", "undo"]
    assert not list(path.parent.glob("*.tmp"))  # written through a temporary file, then renamed

    back = Session.load(path, cg, autosave=path)
    assert back.text == s.text and not back.turns[1].edited
    with pytest.raises(SessionError, match="nothing to undo"):
        back.undo()  # undo starts from the loaded state
    back.delete(0)
    assert len(json.loads(path.read_text())["turns"]) == 1
    back.close()
    s.close()

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    s2 = Session(cg, autosave=blocked / "s.json")  # its folder cannot be made: said, and nothing is lost
    with pytest.warns(UserWarning, match="could not autosave"):
        s2.add_code("x = 1")
    assert len(s2.turns) == 1 and "Error" in s2.autosave_error


def test_on_change_says_which_steps_changed_and_settings(tiny):
    s = Session(tiny[0], temperature=0, max_new_tokens=8, cwd=None)
    seen = []
    s.on_change(seen.append)
    s.add_code("a = 1")
    s.add_code("b = 2")
    s.add_code("print(a + b)")
    s.edit_code(1, "b = 3")
    s.delete(0)
    s.undo()
    s.run()
    s.timeout = 5.0
    s.timeout = 5.0  # the same value: no change
    s.sampling = s.sampling.replace(temperature=0.5)
    assert seen == ["add code"] * 3 + ["code edit", "delete", "undo", "run", "settings", "settings"]
    got = [(c.added, c.removed, c.edited, c.ran, c.settings) for c in seen]
    assert got == [((0,), (), (), (), ()), ((1,), (), (), (), ()), ((2,), (), (), (), ()),
                   ((), (), (1,), (), ()),  # step 2 replaced; step 3 only lost its result: not listed
                   ((), (0,), (), (), ()), ((0,), (), (), (), ()),
                   ((), (), (), (0, 1, 2), ()), ((), (), (), (), ("timeout",)), ((), (), (), (), ("sampling",))]
    assert "edited=(1,)" in repr(seen[3])
    s.close()

