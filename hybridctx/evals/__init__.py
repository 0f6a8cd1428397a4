"""Evaluations: does the right information reach the model, and does the model use it?

    from hybridctx.evals import EvalConfig, run_eval, report
    result = run_eval(EvalConfig.quick())
    report.write(result, Path("eval-out"))

`hybridctx eval` runs the same from the command line. See docs/evals.md.
"""

from hybridctx.evals import report
from hybridctx.evals.runner import STRATEGIES, EvalConfig, EvalResult, Record, run_eval, summary, sweep
from hybridctx.evals.tasks import TASKS, Case

__all__ = [
    "STRATEGIES", "TASKS", "Case", "EvalConfig", "EvalResult", "Record", "report", "run_eval", "summary", "sweep",
]
