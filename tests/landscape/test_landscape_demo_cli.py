"""The ``superlevel landscape demo`` command end to end, the demo library, and plots."""

from __future__ import annotations

import pytest
import torch

from superlevel.cli import main
from superlevel.landscape.demo import gd_unstable_lr, parse_lrs, run_demo, run_optimizer
from superlevel.landscape.synthetic import Himmelblau

pytest.importorskip("matplotlib", reason="the demo draws its figure with matplotlib (plot extra)")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_cli_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "fig" / "demo.png"
    argv = [
        "landscape",
        "demo",
        "--function",
        "himmelblau",
        "--optimizers",
        "gd,superlevel",
        "--steps",
        "40",
        "--seed",
        "1",
        "--resolution",
        "121",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert out.read_bytes()[:8] == PNG_MAGIC
    rows = {
        line.split()[0]: line.split() for line in first.splitlines() if line[:3] in ("gd ", "sup")
    }
    assert set(rows) == {"gd", "superlevel"}
    assert rows["gd"][2] == rows["superlevel"][2] == "40"  # steps run
    # Deterministic with a seed: the same numbers again.
    assert main(argv[:-2]) == 0
    assert capsys.readouterr().out.splitlines()[:4] == first.splitlines()[:4]


def test_cli_rejects_bad_names(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["landscape", "demo", "--optimizers", "gd,lbfgs"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'lbfgs'" in err and "valid: gd, momentum, adam, superlevel" in err
    with pytest.raises(SystemExit):
        main(["landscape", "demo", "--function", "banana"])
    assert "invalid choice: 'banana'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["landscape", "demo", "--lr", "gd=-1"])
    assert "positive" in capsys.readouterr().err


def test_demo_defaults_make_gd_unstable_and_superlevel_steps_bounded():
    h = Himmelblau()
    lr = gd_unstable_lr(h)
    for m in h.minima:  # above 2 / lambda_max at every minimum
        lam = float(torch.linalg.eigvalsh(torch.func.jacrev(torch.func.grad(h))(m)).max())
        assert lr > 2.0 / lam
    res = run_demo("himmelblau", ["gd", "superlevel"], steps=30, seed=1, resolution=101)
    assert res.lrs["gd"] == pytest.approx(lr)
    # SuperLevelSGD's step length is below a(t) = lr * exp(-decay * t).
    pts = res.trajectories["superlevel"]
    steps = (pts[1:] - pts[:-1]).norm(dim=1)
    a_t = res.lrs["superlevel"] * torch.exp(-res.decay * torch.arange(30, dtype=torch.float64))
    assert (steps <= a_t + 1e-12).all()
    # Every report covers every step.
    for rep in res.reports.values():
        assert rep.n_steps == 30 and rep.components.shape == (31,)


def test_gd_divergence_is_detected():
    pts, diverged = run_optimizer(Himmelblau(), torch.tensor([4.0, 4.0]), "gd", 0.5, 50)
    assert diverged and torch.isfinite(pts).all() and len(pts) < 51


def test_parse_lrs():
    names = ["gd", "superlevel"]
    assert parse_lrs(None, names) == {"gd": None, "superlevel": None}
    assert parse_lrs("0.1", names) == {"gd": 0.1, "superlevel": 0.1}
    assert parse_lrs("superlevel=0.3", names) == {"gd": None, "superlevel": 0.3}
    with pytest.raises(ValueError, match="not being run"):
        parse_lrs("adam=0.1", names)
    with pytest.raises(ValueError, match="valid: gd"):
        parse_lrs("sgdx=0.1", names)


def test_plot_components_draws_into_given_axes():
    from matplotlib.figure import Figure

    from superlevel.landscape.components import grid_values
    from superlevel.landscape.plots import plot_components

    h = Himmelblau()
    fig = Figure()
    ax = fig.subplots()
    got = plot_components(grid_values(h, h.bounds, 41), 12.0, ax=ax, minima=h.minima)
    assert got is fig
    assert ax.get_title() == "4 components of {f <= 12}"
    with pytest.raises(ValueError, match="2-D grid"):
        from superlevel.landscape.components import Grid

        plot_components(Grid((torch.zeros(3).numpy(),), torch.zeros(3).numpy()), 0.0)


def test_cli_checks_out_and_resolution_before_computing(tmp_path, capsys):
    quick = ["landscape", "demo", "--steps", "5", "--resolution", "21"]
    folder = tmp_path / "figs"
    folder.mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for extra, fragment in (
        (["--resolution", "100000"], "at most 2001 (the grid has resolution**2 points)"),
        (["--out", str(folder)], f"'{folder}' is a folder; give a file name"),
        (["--out", str(tmp_path / "x.xyz")], "matplotlib cannot write '.xyz' files"),
        (["--out", str(blocker / "x.png")], f"'{blocker}' is not a folder"),
    ):
        with pytest.raises(SystemExit) as exc:
            main([*quick, *extra])
        assert exc.value.code == 2
        out, err = capsys.readouterr()
        assert fragment in err and out == "", err  # refused before any output
    assert list(folder.iterdir()) == []
    # No suffix: the figure is FILE.png, and that is the name printed.
    assert main([*quick, "--out", str(tmp_path / "fig")]) == 0
    assert f"figure: {tmp_path / 'fig.png'}" in capsys.readouterr().out
    assert (tmp_path / "fig.png").read_bytes()[:8] == PNG_MAGIC


def test_cli_a_figure_the_disk_refuses_is_one_error_line(tmp_path, monkeypatch, capsys):
    import errno

    from matplotlib.figure import Figure

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    out = tmp_path / "x.png"
    assert main(["landscape", "demo", "--steps", "5", "--resolution", "21", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot write figure {out}: No space left on device\n"
