"""At home in the notebook, through the real sandbox: the working folder, sharing values both ways, fixing a step
from its error, step names in tracebacks, the program text and the session's reprs. The packaged model writes
the steps; where a test needs a step to run whatever the model writes, a stop rule cuts the step to nothing."""
from __future__ import annotations

import pytest

import convsynth
from convsynth import SessionError
from convsynth.session import Session


@pytest.fixture(scope="module")
def cg():
    return convsynth.load()


@pytest.fixture
def make(cg):
    made = []

    def new(**kw):
        s = Session(cg, temperature=0, max_new_tokens=24, **kw)
        made.append(s)
        return s
    yield new
    for s in made:
        s.close()


class Point:  # defined in this test module: the sandbox cannot import it
    pass


def test_steps_run_in_the_folder_the_session_was_created_in(make, tmp_path, monkeypatch):
    (tmp_path / "data.csv").write_text("a,b\n1,2\n3,4\n")
    monkeypatch.chdir(tmp_path)
    s = make()
    assert s.cwd == str(tmp_path.resolve())
    s.add_code("rows = open('data.csv').read().splitlines()\nprint(len(rows))\n"
               "open('written.txt', 'w').write('kept')")
    assert s.run()[-1].stdout.strip() == "3"
    s.close()
    assert (tmp_path / "written.txt").read_text() == "kept"  # files outlast the session


def test_cwd_can_be_chosen_or_private(make, tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    s = make(cwd=other)
    s.add_code("import os\nprint(os.getcwd())")
    assert s.run()[-1].stdout.strip() == str(other.resolve())
    private = make(cwd=None)
    private.add_code("import os\nprint(os.getcwd())")
    folder = private.run()[-1].stdout.strip()
    assert folder != str(tmp_path) and "convsynth-sandbox-" in folder
    assert "a private folder" in repr(private)
    with pytest.raises(SessionError, match="not a folder"):
        Session(s.model, cwd=tmp_path / "missing")


def test_share_and_get_a_dataframe_a_list_and_a_dict(make, tmp_path):
    pd = pytest.importorskip("pandas")
    s = make(cwd=tmp_path)
    df = pd.DataFrame({"city": ["Oslo", "Lima"], "temp": [3.5, 19.0]})
    turn = s.share(df=df, names=["a", "b", "c", "d", "e"], config={"k": 1})
    assert turn.result.ok and turn in s.turns
    assert "df, a pandas DataFrame with shape (2, 2) and columns city, temp" in s.text
    assert "names, a list of 5 items; first items ['a', 'b', 'c']" in s.text
    assert "config, a dict of 1 items; keys ['k']" in s.text
    assert "df = ...  # shared from the notebook" in s.text
    s.add_code("df['hot'] = df.temp > 10\nnames.append('f')\nprint(len(names), df.shape)")
    assert s.run()[-1].stdout.strip() == "6 (2, 3)"
    back = s.get("df")
    assert list(back.columns) == ["city", "temp", "hot"] and back.hot.tolist() == [False, True]
    assert s.get("names")[-1] == "f" and s.get("config") == {"k": 1}
    assert list(df.columns) == ["city", "temp"]  # the notebook's value is a copy: untouched


def test_shared_values_survive_a_restart_and_a_saved_session(make, tmp_path, cg):
    s = make(cwd=tmp_path)
    s.share(numbers=[3, 1, 2])
    s.add_code("numbers.sort()")
    s.run()
    s.undo()  # restarts the sandbox and replays the shared step
    assert s.get("numbers") == [3, 1, 2]
    path = s.save(tmp_path / "s.json")
    loaded = Session.load(path, cg)
    try:
        loaded.run()
        assert loaded.get("numbers") == [3, 1, 2]
    finally:
        loaded.close()


def test_unpicklable_values_are_refused_and_nothing_is_kept(make, tmp_path):
    s = make(cwd=tmp_path)
    s.add_code("x = 1")
    text = s.text
    with pytest.raises(SessionError, match=r"cannot share 'gen': a generator cannot be pickled"):
        s.share(ok=1, gen=(i for i in range(3)))
    with pytest.raises(SessionError, match="could not share p: the sandbox could not load it .*test_notebook_session"):
        s.share(p=Point())
    assert s.text == text and len(s.turns) == 1
    with pytest.raises(SessionError, match="has no variable 'ok'"):
        s.get("ok")  # the first value of the refused share did not get in either
    with pytest.raises(SessionError, match="identifier"):
        s.share(**{"not a name": 1})


def test_get_explains_what_it_cannot_bring_back(make, tmp_path):
    s = make(cwd=tmp_path)
    with pytest.raises(SessionError, match="nothing has run"):
        s.get("x")
    s.add_code("g = (i for i in range(3))\nclass Local:\n    pass\nobj = Local()")
    s.run()
    with pytest.raises(SessionError, match="cannot bring 'g' back .*pickle"):
        s.get("g")
    with pytest.raises(SessionError, match="cannot bring 'obj' back: the notebook cannot unpickle it"):
        s.get("obj")
    with pytest.raises(SessionError, match="variable name"):
        s.get("1x")


def test_fix_keeps_the_failed_step_when_the_new_one_fails_too(make, tmp_path):
    s = make(cwd=tmp_path)
    turn = s.add_code("y = 2", instruction="Assign 2 to y.")
    turn.check = "assert False, 'never'"
    s.run()
    assert turn.result.status == "expectation_failed"
    kept = s.fix(0)
    assert kept is turn and s.turns == [turn] and turn.code == "y = 2\n"
    assert [a["status"] for a in turn.attempts][0] == "expectation_failed"
    assert len(turn.attempts) == 2
    assert turn.attempts[1]["instruction"] == "Assign 2 to y.\nFix: The check failed: AssertionError: never."
    assert "# Fix: The check failed" not in s.text  # the program keeps the plain instruction
    with pytest.raises(SessionError, match="not generated"):
        s.add_code("1/0")
        s.run()
        s.fix(1)


def test_auto_fix_replaces_the_step_once_an_attempt_runs(make, tmp_path):
    # Every generated step is cut to nothing (it runs); the check fails only the first time it runs.
    s = make(cwd=tmp_path, auto_fix=2, stop=lambda text: 0)
    first = s.add_code("z = 1", instruction="Assign 1 to z.")
    first.check = "import os\nseen = os.path.exists('seen')\nopen('seen', 'w').close()\nassert seen"
    s.add_code("print('after')")
    results = s.run()
    fixed = s.turns[0]
    assert fixed is not first and fixed.result.ok and fixed.instruction == "Assign 1 to z."
    assert [a["code"] for a in fixed.attempts] == ["z = 1\n"]
    assert results[0] is fixed.result and results[1].stdout == "after\n"
    with pytest.raises(SessionError, match="has not failed"):
        s.fix(0)


def test_fix_of_an_earlier_step_reruns_the_later_ones(make, tmp_path):
    s = make(cwd=tmp_path, stop=lambda text: 0)
    broken = s.add_code("w = 1/0", instruction="Assign 1 to w.")
    s.add_code("print('later')")
    s.run()
    assert not broken.result.ok and s.turns[1].result.ok
    fixed = s.fix(0)
    assert fixed.result.ok and s.turns[1].result is None  # it ran after the broken step: it runs again
    assert s.run()[0].stdout == "later\n"


def test_tracebacks_name_the_step(make, tmp_path):
    s = make(cwd=tmp_path)
    s.add_code("def f():\n    return 1 / 0")
    s.add_code("f()")
    s.run()
    tb = s.turns[1].result.traceback
    assert "In step 2, line 1" in tb and "In step 1, line 2" in tb and "Cell In" not in tb
    s.undo()  # a restart replays step 1; its name survives
    s.add_code("f()")
    s.run()
    assert "In step 1, line 2" in s.turns[1].result.traceback


def test_to_python_has_one_blank_line_between_steps_and_the_text_keeps_mtpb(make):
    s = make()
    s.add_code("a = 1\n\n", instruction="Assign 1 to a.")
    s.add_code("print(a)")
    assert s.to_python() == ("# Import libraries.\n\nimport numpy as np\n\n# Assign 1 to a.\na = 1\n\n"
                             "print(a)\n")
    assert "a = 1\n\n\nprint(a)\n\n\n" in s.text  # MTPB's layout, which the model was trained on
    compile(s.to_python(), "program", "exec")


def test_reprs_list_the_steps_and_their_state(make, tmp_path):
    s = make(cwd=tmp_path)
    assert repr(s) == (f"<convsynth.Session convsynth-tiny: 0 steps, cwd={tmp_path.resolve()}, "
                       f"sandbox {s.isolation_info}>")
    s.add_code("x = 1", instruction="Assign <1> to x.")
    s.add_code("1/0")
    s.add_code("y = 2")
    s.run(upto=1)
    assert repr(s).startswith(f"<convsynth.Session convsynth-tiny: 3 steps (1 ok, 1 error, 1 not run), "
                              f"cwd={tmp_path.resolve()}, sandbox ")
    html = s._repr_html_()
    assert "Assign &lt;1&gt; to x." in html and "ZeroDivisionError: division by zero" in html
    assert html.count("<tr>") == 4 and "not run" in html and str(tmp_path.resolve()) in html


def test_describe_says_type_size_and_first_items():
    from convsynth.sharing import describe
    assert describe("hello world") == "a str of length 11: 'hello world'"
    assert describe([]) == "an empty list"
    assert describe(3.5) == "a float: 3.5"
    np = pytest.importorskip("numpy")
    assert describe(np.zeros((2, 3))) == "a numpy ndarray of shape (2, 3) and dtype float64"
