"""``make status``: where the learner is, lab by lab, and the one next thing to do."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from labkit.manifest import Course, Lab
from labkit.notes import Reading, read_notes
from labkit.plugin import Outcome, lab_scores
from labkit.runner import Run, run_pytest

PER_TEST_TIMEOUT_S = 10
RUN_TIMEOUT_S = 240
_STEP = re.compile(r"(lab\d{2}) step ([A-Z]): ([^\n]*?)(?:\. See (\S+))?(?:$|\n|\")")


@dataclass(frozen=True)
class LabStatus:
    lab: Lab
    passed: int
    total: int
    readings: tuple[Reading, ...]
    points: float
    first_failure: Outcome | None

    @property
    def tests_green(self) -> bool:
        return self.total > 0 and self.passed == self.total

    @property
    def notes_done(self) -> bool:
        return all(r.in_range for r in self.readings)

    @property
    def complete(self) -> bool:
        return self.tests_green and self.notes_done


def collect(course: Course, run: Run) -> list[LabStatus]:
    scores = {s.lab: s for s in lab_scores(course, list(run.outcomes.values()))}
    out: list[LabStatus] = []
    for lab in course.available_labs:
        mine = run.for_lab(lab.id)
        failures = [o for o in mine if o.outcome == "failed"]
        score = scores.get(lab.id)
        out.append(
            LabStatus(
                lab=lab,
                passed=sum(o.outcome == "passed" for o in mine),
                total=sum(o.outcome != "skipped" for o in mine),
                readings=tuple(read_notes(lab, course.root / lab.notes)),
                points=score.points if score else 0.0,
                first_failure=_earliest_step(failures),
            )
        )
    return out


def _earliest_step(failures: list[Outcome]) -> Outcome | None:
    """The failure that names the earliest lab step the learner has not done yet."""
    if not failures:
        return None
    steps = Counter(m.group(1, 2) for f in failures if (m := _STEP.search(f.message)))
    if steps:
        first = min(steps)
        for f in failures:
            m = _STEP.search(f.message)
            if m and m.group(1, 2) == first:
                return f
    return failures[0]


def next_step(course: Course, statuses: list[LabStatus], run: Run) -> str:
    if run.timed_out and not run.outcomes:
        return (
            "Next: your code did not finish loading within the time limit; "
            "run `make test LAB=lab00` to see where it hangs."
        )
    for st in statuses:
        lab = st.lab
        if st.total == 0:
            return f"Next: {lab.id} has no tests that ran; run `make test LAB={lab.id}` to see why."
        if not st.tests_green:
            failure = st.first_failure
            what = ""
            if failure is not None:
                match = _STEP.search(failure.message)
                if match:
                    what = f" ({match.group(1)} step {match.group(2)}: {match.group(3)})"
            return (
                f"Next: read {lab.brief}{what}, fill src/minituner/{lab.files[0]}, "
                f"then run `make test LAB={lab.id}`."
            )
        if not st.notes_done:
            problems = [p for r in st.readings if (p := r.problem())]
            return f"Next: record your measurements in {lab.notes}: " + "; ".join(problems[:2])
    upcoming = [lab for lab in course.labs if not lab.available]
    if upcoming:
        return (
            f"Every available lab is complete. {upcoming[0].id} ({upcoming[0].title}) "
            "is not available yet: pull the course again later."
        )
    return "Every lab is complete: well done."


def render(course: Course, statuses: list[LabStatus], run: Run) -> str:
    done = {st.lab.id: st for st in statuses}
    header = f"{'lab':<6} {'title':<34} {'tests':>7}  {'notes':>7}  {'points':>11}  state"
    lines = [course.title, "", header, "-" * len(header)]
    for lab in course.labs:
        st = done.get(lab.id)
        if st is None:
            lines.append(f"{lab.id:<6} {lab.title:<34} {'-':>7}  {'-':>7}  {'-':>11}  not available yet")
            continue
        good = sum(r.in_range for r in st.readings)
        notes = f"{good}/{len(st.readings)}" if st.readings else "-"
        state = "complete" if st.complete else ("tests green" if st.tests_green else "in progress")
        if st.total and st.passed == 0:
            state = "not started"
        points = f"{st.points:.1f}/{lab.points:g}"
        lines.append(
            f"{lab.id:<6} {lab.title:<34} {st.passed:>3}/{st.total:<3}  {notes:>7}  {points:>11}  {state}"
        )
    if run.timed_out:
        lines.append("")
        lines.append(
            f"(the tests stopped after {RUN_TIMEOUT_S} s: unfinished tests count as failing)"
        )
    lines += ["", next_step(course, statuses, run)]
    return "\n".join(lines)


def status(course: Course) -> str:
    labs = course.available_labs
    if not labs:
        return "No lab is available yet."
    expression = " or ".join(lab.marker for lab in labs)
    run = run_pytest(
        Path(course.root),
        ["-q", "-m", expression, f"--timeout={PER_TEST_TIMEOUT_S}",
         "--no-header", "-o", "console_output_style=classic"],
        impl="learner",
        timeout=RUN_TIMEOUT_S,
    )
    return render(course, collect(course, run), run)
