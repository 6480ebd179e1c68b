"""Reading a sweep's results directory and writing its report (report.md, report.html, results.csv)."""
from facetune.results.build import build_report
from facetune.results.collect import Combination, SweepResults, collect_results
from facetune.results.study import Study, load_study

__all__ = ["Combination", "Study", "SweepResults", "build_report", "collect_results", "load_study"]
