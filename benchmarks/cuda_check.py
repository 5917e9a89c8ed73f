"""One-shot CUDA check of SuperLevelSGD (about 5 minutes on one GPU).

Usage::

    python benchmarks/cuda_check.py                 # everything
    python benchmarks/cuda_check.py --skip-speed    # correctness, syncs, graphs only
    python benchmarks/cuda_check.py --big 1e9x400   # the large speed config (default)

Sections, each reported on its own (a failing section does not stop the others):

1. correctness: every path (single, foreach, fused, capturable) on CUDA, float32 and
   float64, against the CPU float64 reference, with a non-finite step in the sequence;
2. host syncs: three steps per path, a non-finite one included, under
   ``torch.cuda.set_sync_debug_mode("error")`` (any device-to-host sync raises);
3. CUDA graph: capture ``opt.step()`` (norm, lr tensor, fused update) and replay it on new
   gradients; parameters must equal an eager twin; a tensor ``lr`` changed in place is seen;
4. torch.compile(fullgraph=True) of the step on CUDA, equal to eager foreach;
5. speed: ``step_cost.py``'s table on CUDA (eager), then eager vs CUDA-graph step times;
6. edges: huge finite float32 (1e20) and float64 (1e200) gradients on every path, taken
   like the reference (the float64-accumulated norm and the ``torch.where`` fallback)
   without a host sync; per-group foreach/fused/single in one optimizer; ``.half()``
   after construction; the int64 step count past 2**24;
7. ``norm_in_backward``: the norm taken by hooks while backward writes the gradients
   (shares computed on the autograd engine's streams) gives the plain step's params on
   every path, with every norm from the hooks and no host sync; an edited gradient falls
   back; float64 falls back (WIDE); a captured step (``capture_step``) falls back inside
   the graph and its replays equal eager steps. Its speed (backward + step against
   SGD's and clip + SGD's) is in section 5.

Prints Markdown; exit status 1 if any section failed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "src"))
sys.path.insert(0, str(HERE))
from superlevel.optim import (  # noqa: E402
    ReferenceSuperLevelSGD,
    SuperLevelSGD,
    capture_step,
    norm_in_backward,
)
from superlevel.optim import backward_norm as bn  # noqa: E402

PATHS = {
    "single": dict(foreach=False),
    "foreach": dict(foreach=True),
    "fused": dict(fused=True),
    "default": {},
    "capturable": dict(capturable=True),
}
FLAGS = [
    dict(lr=0.3),
    dict(lr=0.5, decay=0.3, min_lr=0.05, norm_scale=0.5),
    dict(lr=0.3, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True),
    dict(lr=0.3, momentum=0.8, dampening=0.3, decay=0.1),
]
SHAPES = [(33, 17), (1000,), (4, 5, 6), (1,)]
RESULTS: list[tuple[str, str, str]] = []  # (section, status, detail)
DEVICE = "cuda"  # --dry-run-cpu switches it to check the script itself on a CPU machine


def section(name: str) -> Callable[[Callable[[], str]], Callable[[], None]]:
    """Run ``fn`` and record PASS with its detail, or FAIL with the exception."""

    def wrap(fn: Callable[[], str]) -> Callable[[], None]:
        def run() -> None:
            print(f"\n## {name}\n", flush=True)
            t0 = time.perf_counter()
            try:
                detail = fn()
                RESULTS.append((name, "PASS", f"{detail} ({time.perf_counter() - t0:.1f} s)"))
            except Exception as exc:  # report and go on with the next section
                traceback.print_exc()
                RESULTS.append((name, "FAIL", f"{type(exc).__name__}: {str(exc)[:300]}"))

        return run

    return wrap


def grads_seq(steps: int, dtype: torch.dtype, inf_at: int = 2) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    seq = []
    for s in range(steps):
        gs = [torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) for shape in SHAPES]
        if s == inf_at:
            gs[1][7] = float("inf")
        seq.append(gs)
    return seq


def compare_to_reference(flags: dict, path: str, dtype: torch.dtype) -> float:
    gen = torch.Generator().manual_seed(1)
    init = [torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) for shape in SHAPES]
    fast = [p.clone().to(DEVICE) for p in init]
    slow = [p.clone().double() for p in init]
    opt = SuperLevelSGD(fast, **flags, **PATHS[path])
    ref = ReferenceSuperLevelSGD(slow, **flags)
    for gs in grads_seq(6, dtype):
        for p, q, g in zip(fast, slow, gs, strict=True):
            p.grad, q.grad = g.to(DEVICE), g.double()
        opt.step()
        ref.step()
    assert opt.stats()["step"].item() == ref.t and opt.stats()["skipped"].item() == ref.skipped
    err = 0.0
    for p, q in zip(fast, slow, strict=True):
        scale = q.abs().max().item() + 1e-12
        err = max(err, (p.double().cpu() - q).abs().max().item() / scale)
    return err


@section("1. correctness vs the float64 reference")
def check_correctness() -> str:
    rows = ["| path | dtype | flags | max rel. error |", "|---|---|---|---:|"]
    worst = {torch.float32: 0.0, torch.float64: 0.0, "fused64": 0.0}
    for path in PATHS:
        if path == "capturable" and DEVICE == "cpu":
            continue
        for dtype in (torch.float32, torch.float64):
            for flags in FLAGS:
                err = compare_to_reference(flags, path, dtype)
                # Explicit fused=True in float64: CUDA's kernel takes the lr as float32.
                key = "fused64" if (path, dtype) == ("fused", torch.float64) else dtype
                worst[key] = max(worst[key], err)
                rows.append(f"| {path} | {dtype} | {flags} | {err:.2e} |")
    print("\n".join(rows))
    assert worst[torch.float64] < 1e-12, f"float64 error {worst[torch.float64]:.2e}"
    assert worst["fused64"] < 1e-6, f"fused float64 error {worst['fused64']:.2e}"
    assert worst[torch.float32] < 1e-5, f"float32 error {worst[torch.float32]:.2e}"
    return (
        f"worst rel. error float64 {worst[torch.float64]:.1e}, float32 {worst[torch.float32]:.1e}"
    )


@section("2. no host sync under set_sync_debug_mode('error')")
def check_syncs() -> str:
    done = []
    for path in PATHS:
        for flags in (FLAGS[0], FLAGS[2]):
            params = [torch.randn(s, device="cuda") for s in SHAPES]
            opt = SuperLevelSGD(params, **flags, **PATHS[path])
            seq = [[g.cuda() for g in gs] for gs in grads_seq(3, torch.float32)]
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                for gs in seq:  # step 0 creates state, step 2 is non-finite
                    for p, g in zip(params, gs, strict=True):
                        p.grad = g
                    opt.step()
                    opt.stats()
            finally:
                torch.cuda.set_sync_debug_mode("default")
            assert opt.stats()["skipped"].item() == 1
            done.append(path)
    return f"no sync in {len(done)} runs ({', '.join(sorted(set(done)))})"


@section("3. CUDA graph capture of a step")
def check_graph() -> str:
    torch.manual_seed(0)
    shapes = [(256, 128), (128,), (64, 256)]
    flags = dict(decay=0.05, momentum=0.9, weight_decay=0.01)
    graphed = [torch.randn(s, device="cuda") for s in shapes]
    eager = [p.clone() for p in graphed]
    lr = torch.tensor(0.2, device="cuda")
    opt_g = SuperLevelSGD(graphed, lr=lr, capturable=True, **flags)
    opt_e = SuperLevelSGD(eager, lr=0.2, **flags)
    for p in graphed:
        p.grad = torch.zeros_like(p)
    seq = [[torch.randn(s, device="cuda") for s in shapes] for _ in range(8)]
    seq[5][0][3, 3] = float("nan")

    def feed(i: int) -> None:
        for p, q, g in zip(graphed, eager, seq[i], strict=True):
            p.grad.copy_(g)
            q.grad = g.clone()

    # Two eager steps (they create buffers and counters), then the one-call capture.
    for i in range(2):
        feed(i)
        opt_g.step()
        opt_e.step()
    replay = capture_step(opt_g, warmup=0)
    for i in range(2, 8):
        if i == 6:  # an in-place lr change must be seen by the replay (a scheduler would)
            lr.fill_(0.1)
            opt_e.param_groups[0]["lr"] = 0.1
        feed(i)
        replay()
        opt_e.step()
    torch.cuda.synchronize()
    err = max((p - q).abs().max().item() for p, q in zip(graphed, eager, strict=True))
    assert err < 1e-5, f"graph vs eager max abs diff {err:.2e}"
    s = opt_g.stats()
    assert s["step"].item() == 7 and s["skipped"].item() == 1, {k: v.item() for k, v in s.items()}
    return f"6 replays equal eager (max abs diff {err:.1e}); t=7, skipped=1"


@section("4. torch.compile(fullgraph=True) step on CUDA")
def check_compile() -> str:
    shapes = [(64, 32), (32,)]
    comp = [torch.randn(s, device=DEVICE) for s in shapes]
    eager = [p.clone() for p in comp]
    kw = dict(lr=0.2, decay=0.05, momentum=0.9)
    opt_c, opt_e = SuperLevelSGD(comp, **kw), SuperLevelSGD(eager, **kw, foreach=True)

    @torch.compile(fullgraph=True)
    def step() -> None:
        opt_c.step()

    for i in range(4):
        gs = [torch.randn(s, device=DEVICE) for s in shapes]
        if i == 2:
            gs[0][0, 0] = float("inf")
        for p, q, g in zip(comp, eager, gs, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        step()
        opt_e.step()
    err = max((p - q).abs().max().item() for p, q in zip(comp, eager, strict=True))
    assert err < 1e-5, f"compiled vs eager {err:.2e}"
    return f"compiled step equals eager foreach (max abs diff {err:.1e})"


def graph_timings(configs: list[str], repeats: int) -> list[str]:
    """Eager SGD(foreach), eager ours, ours captured in a CUDA graph (median ms)."""
    from step_cost import make_tensors, parse_config

    rows = [
        "| params x tensors | SGD(foreach) eager | SuperLevelSGD eager "
        "| SuperLevelSGD CUDA graph |",
        "|---|---:|---:|---:|",
    ]
    for text in configs:
        n, k = parse_config(text)
        params = make_tensors(n, k, "cuda")
        sgd = torch.optim.SGD(params, lr=1e-3, foreach=True)
        ours = SuperLevelSGD(params, lr=1e-3, decay=1e-4, capturable=True)
        graph = capture_step(ours, warmup=3)
        steps = {"sgd": sgd.step, "ours": ours.step, "graph": graph}
        times: dict[str, list[float]] = {name: [] for name in steps}
        with torch.no_grad():
            for r in range(repeats + 3):
                for name, fn in steps.items():
                    start, end = torch.cuda.Event(True), torch.cuda.Event(True)
                    start.record()
                    fn()
                    end.record()
                    end.synchronize()
                    if r >= 3:
                        times[name].append(start.elapsed_time(end))
        med = {name: statistics.median(ts) for name, ts in times.items()}
        rows.append(f"| {text} | {med['sgd']:.3f} | {med['ours']:.3f} | {med['graph']:.3f} |")
        del params, sgd, ours, graph
        torch.cuda.empty_cache()
    return rows


def make_speed_section(big: str, repeats: int) -> Callable[[], None]:
    @section("5. speed (CUDA)")
    def check_speed() -> str:
        import step_cost

        configs = ["1e7x100", "1e8x200", "1.2e8x1200", big]
        train = ["1e7x100", "1e8x200", big, f"mlp:{step_cost.MLP_DEFAULT}"]
        if DEVICE == "cpu":
            configs = ["1e5x10", "1e5x100"]
            rows = step_cost.run_training("cpu", [*configs, "mlp:64-32-10x16"], 3)
            assert {r["name"] for r in rows} >= {step_cost.HOOKED}
            return "dry run: " + step_cost.markdown(step_cost.run("cpu", configs, 3))[-60:]
        rows = step_cost.run("cuda", configs, repeats)
        print(step_cost.markdown(rows))
        for line in step_cost.goal_lines(rows):
            print(line)
        print()
        print("\n".join(graph_timings(configs[:3], repeats)))
        # Backward + step, with the norm taken by hooks during backward (norm_in_backward).
        train_rows = step_cost.run_training("cuda", train, repeats)
        print("\n" + step_cost.training_markdown(train_rows))
        for line in step_cost.hook_balance(train_rows) + step_cost.training_goal_lines(train_rows):
            print(line)
        ours = [r for r in rows if r["name"] == "SuperLevelSGD" and r["config"] == big]
        hooked = [r for r in train_rows if r["name"] == step_cost.HOOKED and r["config"] == big]
        text = f"{big}: {ours[0]['vs_sgd']:.2f}x SGD(foreach)" if ours else f"{big} not run"
        if hooked:
            text += (
                f"; hooked step {hooked[0]['step_vs_sgd']:.2f}x SGD's, backward + step "
                f"{hooked[0]['vs_sgd']:.2f}x"
            )
        return text

    return check_speed


def _sync_free(fn: Callable[[], None]) -> None:
    """Run ``fn`` with host syncs turned into errors (CUDA only)."""
    if DEVICE != "cuda":
        fn()
        return
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@section("6. edges: huge gradients, per-group paths, casts, long runs")
def check_edges() -> str:
    done = []
    for path in ("single", "foreach", "fused", "default"):
        for dtype, scale in ((torch.float32, 1e20), (torch.float64, 1e200)):
            gen = torch.Generator().manual_seed(2)
            init = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]
            fast = [p.clone().to(DEVICE) for p in init]
            slow = [p.clone() for p in init]
            opt = SuperLevelSGD(fast, lr=0.5, **PATHS[path])
            ref = ReferenceSuperLevelSGD(slow, lr=0.5)
            gs = [torch.randn(s, generator=gen, dtype=torch.float64).mul(scale).to(dtype)
                  for s in SHAPES]  # fmt: skip
            for p, q, g in zip(fast, slow, gs, strict=True):
                p.grad, q.grad = g.to(DEVICE), g.clone()
            _sync_free(opt.step)
            ref.step()
            assert opt.stats()["skipped"].item() == 0, (path, dtype)
            n = opt.stats()["grad_norm"].item()
            assert abs(n - ref.last_norm) <= 1e-6 * ref.last_norm, (path, dtype, n)
            for p, q in zip(fast, slow, strict=True):
                torch.testing.assert_close(p.cpu(), q, rtol=1e-5, atol=1e-6)
            done.append(f"{path}/{str(dtype)[6:]}")
    # Per-group paths, one optimizer, equal to the reference.
    init = [torch.randn(s, dtype=torch.float32) for s in SHAPES]
    fast = [p.clone().to(DEVICE) for p in init]
    slow = [p.clone() for p in init]
    groups = [{"params": [0], "foreach": False}, {"params": [1], "fused": True},
              {"params": [2, 3], "foreach": True, "momentum": 0.9}]  # fmt: skip
    opt = SuperLevelSGD([{**g, "params": [fast[i] for i in g["params"]]} for g in groups])
    ref = ReferenceSuperLevelSGD(
        [
            {k: v for k, v in g.items() if k not in ("foreach", "fused")}
            | {"params": [slow[i] for i in g["params"]]}
            for g in groups
        ]  # fmt: skip
    )
    for gs in grads_seq(4, torch.float32):
        for p, q, g in zip(fast, slow, gs, strict=True):
            p.grad, q.grad = g.to(DEVICE), g.clone()
        _sync_free(opt.step)
        ref.step()
    for p, q in zip(fast, slow, strict=True):
        torch.testing.assert_close(p.cpu(), q, rtol=1e-5, atol=1e-6)
    # .half() after construction: true norm, not skipped.
    torch.manual_seed(0)
    m = torch.nn.Linear(300, 300).to(DEVICE)
    o = SuperLevelSGD(m.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(8, 300, device=DEVICE)
    m(x).square().mean().backward()
    o.step()
    o.zero_grad()
    m.half()
    m(x.half()).float().square().sum().backward()
    want = sum(float(p.grad.double().square().sum()) for p in m.parameters()) ** 0.5
    _sync_free(o.step)
    assert o.stats()["skipped"].item() == 0
    assert abs(o.stats()["grad_norm"].item() - want) <= 1e-3 * want
    # int64 step count past float32's 2**24.
    sd = o.state_dict()
    sd["param_groups"][0]["step"] = torch.tensor(2**24 + 1)
    o.load_state_dict(sd)
    _sync_free(o.step)
    assert o.stats()["step"].item() == 2**24 + 2
    return f"huge grads on {len(done)} path/dtype pairs, per-group paths, .half(), t > 2**24"


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(
        (p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


@section("7. norm_in_backward: the norm taken by hooks during backward")
def check_norm_in_backward() -> str:
    def twins(dtype: torch.dtype) -> tuple[torch.nn.Module, torch.nn.Module]:
        torch.manual_seed(0)
        a = torch.nn.Sequential(
            torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 10)
        ).to(DEVICE, dtype)  # fmt: skip
        b = torch.nn.Sequential(
            torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 10)
        ).to(DEVICE, dtype)  # fmt: skip
        b.load_state_dict(a.state_dict())
        return a, b

    gen = torch.Generator().manual_seed(3)
    data = [(torch.randn(32, 64, generator=gen), torch.randn(32, 10, generator=gen))
            for _ in range(6)]  # fmt: skip
    kw = dict(lr=0.2, decay=0.05, momentum=0.9, weight_decay=0.01)
    done = []
    for path in ("single", "foreach", "fused", "default"):
        for dtype in (torch.float32, torch.float64):
            hooked, plain = twins(dtype)
            opt_h = SuperLevelSGD(hooked.parameters(), **kw, **PATHS[path])
            opt_p = SuperLevelSGD(plain.parameters(), **kw, **PATHS[path])
            handle = norm_in_backward(opt_h)
            for i, (x, y) in enumerate(data):
                for m in (hooked, plain):
                    m.zero_grad()
                    out = m(x.to(DEVICE, dtype))
                    torch.nn.functional.mse_loss(out, y.to(DEVICE, dtype)).backward()
                    if i == 3:  # an edit after backward: that step falls back
                        torch.nn.utils.clip_grad_norm_(m.parameters(), 0.1)
                _sync_free(opt_h.step)
                opt_p.step()
            err = _max_diff(hooked, plain)
            assert err <= (1e-6 if dtype == torch.float32 else 1e-12), (path, dtype, err)
            want = {bn.EDITED: 1} if dtype == torch.float32 or DEVICE == "cpu" else None
            if want is not None:  # float32 (and CPU host scalars): 5 steps from the hooks
                assert (handle.cached, dict(handle.reasons)) == (5, want), (path, handle)
            else:  # float64 with device scalars: no share without reading the gradients
                assert handle.cached == 0 and set(handle.reasons) <= {bn.EDITED, bn.WIDE}
            done.append(f"{path}/{str(dtype)[6:]}")
    text = f"hooked == plain on {len(done)} path/dtype pairs"
    if DEVICE != "cuda":
        return text + " (dry run: no capture)"
    # A captured step with hooks attached: the graph takes the norm itself.
    hooked, plain = twins(torch.float32)
    lr = torch.tensor(0.2, device=DEVICE)
    opt_g = SuperLevelSGD(hooked.parameters(), lr=lr, capturable=True, momentum=0.9)
    opt_e = SuperLevelSGD(plain.parameters(), lr=0.2, momentum=0.9)
    handle = norm_in_backward(opt_g)
    replay = None
    for x, y in data:
        for m in (hooked, plain):
            m.zero_grad(set_to_none=False)
            torch.nn.functional.mse_loss(m(x.to(DEVICE)), y.to(DEVICE)).backward()
        if replay is None:
            replay = capture_step(opt_g)  # warm-up step (cached) + the capture
        else:
            replay()
        opt_e.step()
    torch.cuda.synchronize()
    err = _max_diff(hooked, plain)
    assert err < 1e-5, f"captured with hooks vs eager {err:.2e}"
    assert handle.reasons[bn.CAPTURE] == 1, handle
    return text + f"; a captured step falls back (CAPTURE) and replays equal eager ({err:.1e})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--big", default="1e9x400", help="largest speed config (NxK)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dry-run-cpu", action="store_true", help="check the script on CPU")
    args = parser.parse_args(argv)
    if args.dry_run_cpu:
        global DEVICE
        DEVICE = "cpu"
        for check in (
            check_correctness, check_compile, check_edges, check_norm_in_backward,
            make_speed_section("1e5x10", 3),
        ):  # fmt: skip
            check()
        print("\n".join(f"| {n} | {s} | {d} |" for n, s, d in RESULTS))
        return 0 if all(s == "PASS" for _, s, _ in RESULTS) else 1
    if not torch.cuda.is_available():
        print("CUDA is not available; nothing to check.")
        return 1
    props = torch.cuda.get_device_properties(0)
    print(f"# SuperLevelSGD CUDA check\n\ntorch {torch.__version__}, {props.name}, "
          f"{props.total_memory / 2**30:.0f} GiB")  # fmt: skip
    checks = [check_correctness, check_syncs, check_graph, check_edges, check_norm_in_backward]
    if not args.skip_compile:
        checks.append(check_compile)
    if not args.skip_speed:
        checks.append(make_speed_section(args.big, args.repeats))
    for check in checks:
        check()
    print("\n## Summary\n\n| section | status | detail |\n|---|---|---|")
    for name, status, detail in RESULTS:
        print(f"| {name} | {status} | {detail} |")
    return 0 if all(status == "PASS" for _, status, _ in RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
