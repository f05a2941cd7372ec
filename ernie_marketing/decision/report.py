"""An HTML report of decisions with PNG plots, readable offline.

The page uses no external resource (no CDN, no web font, no script): one
index.html with inline CSS and PNG images beside it, drawn with matplotlib
(Agg). The report is written to a temporary folder and moved into place,
so a reader never sees half of it.
"""

import html
import logging
import os
import shutil

import numpy as np

from ..errors import ConfigError

logger = logging.getLogger(__name__)

INDEX_FILE = "index.html"
# Fonts with Chinese glyphs that matplotlib uses when one is installed.
# Without one, the plots show short aliases for non-ASCII names, and the
# page lists them.
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC",
             "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "SimHei",
             "Microsoft YaHei", "PingFang SC", "AR PL UMing CN")
_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
img { display: block; margin: 1em 0; }
.note { color: #555; font-size: 90%; }
"""


def write_report(report_dir, decision, evaluation=None, title="Decisions"):
    """Write index.html and its plots to `report_dir`; return the page's path.

    An existing `report_dir` is replaced only when it contains an earlier
    report (an index.html) or is empty.
    """
    check_report_target(report_dir)
    parent = os.path.dirname(os.path.abspath(report_dir))
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{os.path.basename(report_dir)}"
                                   f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        page = _Page(title, decision, evaluation, _Labels())
        page.render(staging)
        _replace_dir(staging, report_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    path = os.path.join(report_dir, INDEX_FILE)
    logger.info("wrote the report %s", path)
    return path


def check_report_target(report_dir):
    """Raise ConfigError when `report_dir` cannot take a report."""
    if os.path.isfile(report_dir):
        raise ConfigError(f"report path {report_dir} is a file; give a "
                          "directory for the report")
    if os.path.isdir(report_dir) and os.listdir(report_dir) and not \
            os.path.isfile(os.path.join(report_dir, INDEX_FILE)):
        raise ConfigError(f"report directory {report_dir} has files but no "
                          f"{INDEX_FILE}, so it is not an earlier report; "
                          "choose another report directory")


def _replace_dir(staging, target):
    old = None
    if os.path.isdir(target):
        old = f"{target}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _Labels:
    """Names as the plots show them: as is, or aliases without a CJK font."""

    def __init__(self):
        self.font = _cjk_font()
        self.aliases = {}

    def __call__(self, text, prefix="A"):
        text = str(text)
        if self.font or text.isascii():
            return text
        if text not in self.aliases:
            count = sum(a.startswith(prefix) for a in self.aliases.values())
            self.aliases[text] = f"{prefix}{count + 1}"
        return self.aliases[text]


def _cjk_font():
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


def _figure(width=7.0, height=4.2):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


class _Page:
    """The report page: sections of HTML text plus the PNG files they show."""

    def __init__(self, title, decision, evaluation, labels):
        self.title = title
        self.decision = decision
        self.evaluation = evaluation
        self.labels = labels
        self.parts = []

    def render(self, folder):
        import matplotlib

        style = {"font.family": ["sans-serif"]}
        if self.labels.font:
            style["font.sans-serif"] = [self.labels.font, "DejaVu Sans"]
        with matplotlib.rc_context(style):
            self._summary()
            if self.evaluation is not None:
                self._policies()
                self._curves(folder)
            self._budget(folder)
            if self.evaluation is not None:
                self._segments(folder)
        self._aliases()
        body = "\n".join(self.parts)
        page = (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n"
                f"<meta charset=\"utf-8\">\n<title>{_e(self.title)}</title>\n"
                f"<style>{_STYLE}</style>\n</head>\n<body>\n"
                f"<h1>{_e(self.title)}</h1>\n{body}\n</body>\n</html>\n")
        with open(os.path.join(folder, INDEX_FILE), "w", encoding="utf-8") as f:
            f.write(page)

    def _summary(self):
        decision = self.decision
        model = decision.model
        allocation = decision.allocation
        counts = allocation.counts(len(model.actions))
        config = model.config
        budget = "none" if config.budget is None else f"{config.budget:,.2f}"
        rows = [[action, int(n), _pct(n / max(counts.sum(), 1))]
                for action, n in zip(model.actions, counts)]
        self.parts.append(
            f"<p>{len(decision.value):,} customers, budget {_e(budget)}, "
            f"allocated by {_e(allocation.method)} ({_e(allocation.status)}). "
            f"Predicted gain over {_e(model.control)}: "
            f"{allocation.gain:,.2f} in total at an expected cost of "
            f"{allocation.cost:,.2f}.</p>")
        self.parts.append(_table(["action", "customers", "share"], rows))

    def _policies(self):
        evaluation = self.evaluation
        level = self.decision.model.config.confidence
        has_truth = any(np.isfinite(p.true_value) for p in evaluation.policies)
        header = ["policy", "value per customer", f"{level:.0%} interval",
                  "gain over no one", f"{level:.0%} interval",
                  "expected cost per customer"]
        if has_truth:
            header.append("true value per customer")
        rows = []
        for policy in evaluation.policies:
            row = [policy.name, f"{policy.value:.4f}",
                   f"{policy.low:.4f} to {policy.high:.4f}",
                   f"{policy.gain:.4f}",
                   f"{policy.gain_low:.4f} to {policy.gain_high:.4f}",
                   f"{policy.predicted_cost:.4f}"]
            if has_truth:
                row.append(f"{policy.true_value:.4f}")
            rows.append(row)
        self.parts.append("<h2>Policy values</h2>")
        self.parts.append(
            f"<p class=\"note\">Estimated on {evaluation.rows:,} customers of "
            "the randomized data by inverse propensity weighting; the "
            "interval is the normal approximation. Propensities: "
            + ", ".join(f"{_e(a)} {p:.3f}" for a, p in
                        zip(self.decision.model.actions, evaluation.propensity))
            + (f". {evaluation.dropped:,} customers without a priced outcome "
               "are left out" if evaluation.dropped else "") + ".</p>")
        self.parts.append(_table(header, rows))

    def _curves(self, folder):
        model = self.decision.model
        self.parts.append("<h2>Uplift and Qini curves</h2>")
        plots = (("uplift.png", "Uplift (cumulative gain, IPW)",
                  "value added per customer"),
                 ("qini.png", "Qini",
                  "incremental value / number of treated rows"))
        for index, (name, title, ylabel) in enumerate(plots):
            figure = _figure()
            axes = figure.subplots()
            for key, pair in self.evaluation.curves.items():
                curve = pair[index]
                label = ("policy (best action)" if key == "policy"
                         else self.labels(model.actions[key]))
                area = curve.area - curve.random_area
                axes.plot(curve.fraction, curve.value,
                          label=f"{label} (area over random {area:.4f})",
                          linewidth=2 if key == "policy" else 1)
                if key == "policy":
                    axes.plot([0, 1], [0, curve.value[-1]], "k--",
                              linewidth=1, label="random ranking")
            axes.set_xlabel("fraction of customers targeted, by predicted gain")
            axes.set_ylabel(ylabel)
            axes.set_title(title)
            axes.legend(fontsize=8)
            self._image(folder, figure, name, title)
        policy_uplift, policy_qini = self.evaluation.curves["policy"]
        self.parts.append(
            f"<p>AUUC {policy_uplift.area:.4f} (random ranking "
            f"{policy_uplift.random_area:.4f}); Qini coefficient "
            f"{policy_qini.area - policy_qini.random_area:.4f}.</p>")

    def _budget(self, folder):
        curve = (self.evaluation.budget_curve if self.evaluation is not None
                 else self.decision.budget_curve())
        figure = _figure()
        axes = figure.subplots()
        axes.plot(curve["budget"], curve["predicted_gain"], "o-",
                  label="predicted gain (model)")
        if "gain" in curve:
            axes.plot(curve["budget"], curve["gain"], "s-",
                      label="estimated gain (IPW)")
            axes.fill_between(curve["budget"], curve["low"], curve["high"],
                              alpha=0.2, label="interval (IPW)")
            axes.plot(curve["budget"], curve["random_gain"], "--",
                      label="random targeting, same budget")
        if "tlearner_gain" in curve:
            axes.plot(curve["budget"], curve["tlearner_gain"], "^-",
                      label="T-learner (IPW)")
        if "true_gain" in curve:
            axes.plot(curve["budget"], curve["true_gain"], "k:",
                      label="true gain")
        budget = self.decision.model.config.budget
        if budget is not None and budget <= curve["budget"].max() * 1.5:
            axes.axvline(budget, color="gray", linewidth=1,
                         label=f"chosen budget {budget:,.0f}")
        axes.set_xlabel("budget (total expected cost)")
        axes.set_ylabel("gain over targeting no one, per customer")
        axes.set_title("Value against budget (greedy allocation)")
        axes.legend(fontsize=8)
        self.parts.append("<h2>Value against budget</h2>")
        self._image(folder, figure, "budget.png", "Value against budget")

    def _segments(self, folder):
        if not self.evaluation.segments:
            return
        self.parts.append("<h2>Segments</h2>")
        for k, (column, table) in enumerate(self.evaluation.segments.items()):
            self.parts.append(f"<h3>{_e(column)}</h3>")
            self.parts.append(_frame_table(table))
            if "value" not in table:
                continue
            figure = _figure(height=3.6)
            axes = figure.subplots()
            positions = np.arange(len(table))
            gain = table["gain"].to_numpy(dtype=float)
            error = np.stack([gain - table["gain low"].to_numpy(dtype=float),
                              table["gain high"].to_numpy(dtype=float) - gain])
            axes.bar(positions, gain, yerr=error, capsize=3)
            axes.axhline(0, color="black", linewidth=0.8)
            axes.set_xticks(positions, [self.labels(v, "S")
                                        for v in table["segment"]],
                            rotation=30, ha="right", fontsize=8)
            axes.set_ylabel("gain per customer (IPW)")
            axes.set_title(f"Gain of the policy over no one, by {column}")
            self._image(folder, figure, f"segments_{k}.png",
                        f"Gain by {column}")

    def _aliases(self):
        if not self.labels.aliases:
            return
        rows = [[alias, name] for name, alias in self.labels.aliases.items()]
        self.parts.append(
            "<p class=\"note\">No font with Chinese characters is installed "
            "for matplotlib, so the plots use these short names:</p>")
        self.parts.append(_table(["in the plots", "name"], rows))

    def _image(self, folder, figure, name, alt):
        figure.savefig(os.path.join(folder, name), format="png")
        width, height = (figure.get_size_inches() * figure.dpi).astype(int)
        self.parts.append(f"<img src=\"{_e(name)}\" alt=\"{_e(alt)}\" "
                          f"width=\"{width}\" height=\"{height}\">")


def _e(text):
    return html.escape(str(text))


def _pct(share):
    return f"{share:.1%}"


def _table(header, rows):
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row)
                   + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


def _frame_table(frame):
    rows = []
    for record in frame.itertuples(index=False):
        rows.append([_format_cell(column, value)
                     for column, value in zip(frame.columns, record)])
    return _table(list(frame.columns), rows)


def _format_cell(column, value):
    if isinstance(value, (float, np.floating)):
        if str(column).startswith("share"):
            return _pct(value)
        return f"{value:.4f}"
    return value
