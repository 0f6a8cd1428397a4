"""Evaluations: does the right information reach the model, and does the model use it?

    from hybridctx.evals import EvalConfig, eval_settings, run_eval, report
    from hybridctx.pipeline import shared_pipelines
    config = EvalConfig.quick()
    with shared_pipelines(eval_settings(config)) as open_kb:   # pipelines sharing one model
        result = run_eval(config, open_kb)
    report.write(result, Path("eval-out"))

`hybridctx eval` runs the same from the command line. See docs/evals.md.
"""

from hybridctx.evals import report
from hybridctx.evals.runner import STRATEGIES, EvalConfig, EvalResult, Record, eval_settings, run_eval, summary, sweep
from hybridctx.evals.tasks import TASKS, Case

__all__ = [
    "STRATEGIES", "TASKS", "Case", "EvalConfig", "EvalResult", "Record", "eval_settings", "report", "run_eval",
    "summary", "sweep",
]
