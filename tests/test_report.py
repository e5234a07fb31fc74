"""`evo report`: the HTML page of a finished run, of a running one and of a run with no
valid program; every embedded figure must be a real PNG, and the page must render in a
real (headless Chromium) browser."""

from __future__ import annotations

import base64
import io
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from evoengine.archive.records import ProgramRecord
from evoengine.archive.store import ArchiveStore, make_engine, sqlite_url
from evoengine.evaluation.result import ErrorKind, EvaluationResult
from tests.conftest import archive_rows, evo_command

RUN_ARGS = ("run", "problem=bin_packing_quick", "llm=gp", "sandbox=process", "ui=none")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(data) for data in
            re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def assert_real_png(data: bytes) -> Image.Image:
    assert data.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(data))
    image.load()  # decodes every pixel
    assert image.width > 50 and image.height > 50
    return image


def report(target: str | Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(evo_command("report", str(target), *extra), cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("report")
    done = subprocess.run(evo_command(*RUN_ARGS, "search.max_evaluations=40", "seed=5",
                                      "name=demo"), cwd=workdir, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return workdir / "runs" / "demo"


def test_report_of_a_finished_run_embeds_every_figure(finished_run: Path) -> None:
    done = report(finished_run, finished_run.parent)
    assert done.returncode == 0, done.stderr
    page = finished_run / "report.html"
    assert str(page).endswith(done.stdout.split("report written to ")[1].split()[0])
    html = page.read_text()
    images = embedded_pngs(html)
    # curves, heatmap, success rates, lineage, errors/outcomes, train vs validation
    assert len(images) == 6
    for data in images:
        assert_real_png(data)
    assert "http://" not in html and "https://" not in html  # self-contained
    best_id, best_score, validation = archive_rows(
        finished_run / "archive.db", "SELECT id, score, validation_score FROM programs "
        "WHERE valid ORDER BY score DESC, id LIMIT 1")[0]
    assert f"program #{best_id}, validation {validation:.4g}" in html
    assert f"{best_score:.4g}" in html
    for heading in ("Score over evaluations", "MAP-Elites grids", "Success by operator",
                    "Lineage of the best program", "Errors", "Train vs validation"):
        assert heading in html


def test_report_renders_in_headless_chromium(finished_run: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium (as .ci/run does)")
    out = tmp_path / "page.html"
    assert report(finished_run, tmp_path, "--out", str(out)).returncode == 0
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
                    "--window-size=1200,2400", f"--screenshot={shot}", out.as_uri()],
                   capture_output=True, timeout=180, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    image = assert_real_png(shot.read_bytes()).convert("RGB")
    colours = image.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 50  # text and figures, not a blank page
    dominant = max(count for count, _ in colours)
    assert dominant < 0.97 * image.width * image.height


@pytest.mark.slow
def test_report_of_a_running_run(tmp_path: Path) -> None:
    writer = subprocess.Popen(evo_command(*RUN_ARGS, "search.max_evaluations=100000",
                                          "name=live"), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "runs" / "live"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if _stored_programs(run_dir / "archive.db") >= 10:
                break
            time.sleep(0.5)
        done = report(run_dir, tmp_path)
        assert done.returncode == 0, done.stderr
        html = (run_dir / "report.html").read_text()
        assert "the run is still going" in html
        for data in embedded_pngs(html):
            assert_real_png(data)
        assert writer.poll() is None  # the run went on
    finally:
        writer.send_signal(signal.SIGTERM)
        _, stderr = writer.communicate(timeout=120)
    assert writer.returncode == 0, stderr


def test_report_of_a_run_with_no_valid_program(tmp_path: Path) -> None:
    db = tmp_path / "archive.db"
    engine = make_engine(sqlite_url(db))
    store = ArchiveStore.create_run(engine, "broken", "bin_packing", 0, {})
    failed = EvaluationResult(valid=False, error=ErrorKind.CRASH,
                              feedback="Traceback: ZeroDivisionError")
    store.add_programs([(ProgramRecord(island=0, generation=0, operator="initial",
                                       model="seed", code=f"x = 1 / {i}", valid=False,
                                       score=None, error="crash"), failed)
                        for i in range(3)])
    engine.dispose()
    done = report(db, tmp_path, "--out", str(tmp_path / "r.html"))
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "r.html").read_text()
    assert "No valid program yet" in html
    images = embedded_pngs(html)
    assert len(images) == 1  # only the error breakdown has something to show
    assert_real_png(images[0])
    assert "crash" in html


def test_report_bad_input_is_one_line(tmp_path: Path) -> None:
    done = report(tmp_path / "runs" / "nope", tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "no such run folder" in done.stderr
    two = make_engine(sqlite_url(tmp_path / "two.db"))
    for name in ("a", "b"):
        ArchiveStore.create_run(two, name, "p", 0, {})
    two.dispose()
    done = report(tmp_path / "two.db", tmp_path)
    assert done.returncode == 2 and "--run NAME" in done.stderr
    # checked before the page is drawn (it used to fail only when written)
    out = tmp_path / "no_such_folder" / "r.html"
    done = report(tmp_path / "two.db", tmp_path, "--run", "a", "--out", str(out))
    assert done.returncode == 2 and done.stderr == (
        f"evo: error: cannot write {out}: there is no folder {out.parent}; give --out a path "
        "in a folder you can write to\n")


def test_a_database_url_whose_driver_is_missing_is_one_line(tmp_path: Path) -> None:
    """`mysql://` (no MySQL driver is installed here) ended `evo report` and `evo browse`
    with a ModuleNotFoundError traceback, and `evo run` suggested the postgres extra."""
    url = "mysql://user:secret@127.0.0.1/archive"
    says = ("needs the database driver MySQLdb, which is not installed: install the Python "
            "package that provides MySQLdb, or name an installed driver in the URL")
    for command in (("report", url), ("browse", url)):
        done = subprocess.run(evo_command(*command), cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("evo: error: mysql://user:***@127.0.0.1/archive "
                                      + says), done.stderr
    run = subprocess.run(evo_command("run", "problem=bin_packing_quick", f"db.url={url}"),
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stderr == f"evo: error: db.url {says} (dialect+driver://...)\n"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _stored_programs(db_path: Path) -> int:
    """Programs stored so far by a starting run (0 until its schema exists)."""
    if not db_path.exists():
        return 0
    try:
        return archive_rows(db_path, "SELECT count(*) FROM programs")[0][0]
    except sqlite3.OperationalError:  # the migration has not created the tables yet
        return 0


def test_stored_text_is_drawn_as_written(finished_run: Path, tmp_path: Path) -> None:
    """A model named ``gpt-$\\foo$`` failed the whole report: matplotlib read the
    ``$...$`` in a figure label as math (ParseFatalException, a traceback); and a cell
    that is not ``i,j`` failed it with a ValueError. Labels are now drawn as written,
    the damaged row is left out of the grid, and every string the page quotes is
    HTML-escaped."""
    copy = tmp_path / "demo"
    shutil.copytree(finished_run, copy)
    with sqlite3.connect(copy / "archive.db") as conn:
        conn.execute("UPDATE mutation_calls SET model = 'gpt-$\\foo$'")
        conn.execute("UPDATE programs SET model = 'gpt-$\\foo$', "
                     "operator = '<img src=x onerror=alert(1)>'")
        conn.execute("UPDATE programs SET cell = 'x,y' WHERE id = 1")
    done = report(copy, tmp_path)
    assert done.returncode == 0, done.stderr
    html = (copy / "report.html").read_text()
    assert len(embedded_pngs(html)) == 6
    assert "gpt-$\\foo$" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
