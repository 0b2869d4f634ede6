"""Step 62, startup timing: seconds from process start to port open, HTTP ready and first token,
within expect.startup."""

from servegate.steps import startup


def test_startup_phases_recorded(startup_timings, deployment):
    serving = [entry for entry in startup_timings.values() if "serve" in entry["roles"]]
    assert serving and all(set(startup.PHASES) <= set(entry) for entry in serving), \
        f"startup phases missing: {startup_timings} (readiness: {deployment.readiness})"


def test_startup_within_limits(startup_timings, recipe):
    late = startup.check(startup_timings, recipe.expect.startup)
    assert not late, "startup too slow:\n" + "\n".join(str(x) for x in late)
