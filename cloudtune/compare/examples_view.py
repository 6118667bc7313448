"""Every example side by side in report.html: one row per question with the reference and
every target's full answer and scores, filters (disagreements only, worse than baseline,
close but wrong, one target) and a search box, in plain inline JavaScript: the report stays
one self-contained file that makes no request.

The filters also read the page's address fragment (``report.html#disagree&worse&target=
openai%20fine-tuned&q=paris``), so a filtered view can be bookmarked or shared, and the
browser test drives them the same way.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudtune.compare.report import Comparison

STYLE = """#examples td.t{min-width:180px}#examples .ans{white-space:pre-wrap}#examples .sc{color:#555;font-size:12px}
#examples .flag{background:#fff3cd;border:1px solid #e0b000;border-radius:3px;padding:0 4px;font-size:11px}
#examples .worse{background:#fde8e8}#examples .fail{color:#a00}.controls{display:flex;gap:14px;flex-wrap:wrap;
align-items:center;margin:8px 0}.controls input[type=search]{width:260px}"""

SCRIPT = """(function () {
  var table = document.getElementById('examples');
  if (!table) { return; }
  var rows = Array.prototype.slice.call(table.tBodies[0].rows);
  var search = document.getElementById('ex-search'), disagree = document.getElementById('ex-disagree'),
      worse = document.getElementById('ex-worse'), close = document.getElementById('ex-close'),
      target = document.getElementById('ex-target'), shown = document.getElementById('ex-shown');
  function listed(row, name) { return JSON.parse(row.getAttribute(name) || '[]'); }
  function apply() {
    var query = search.value.toLowerCase(), only = target.value, count = 0;
    Array.prototype.forEach.call(table.querySelectorAll('[data-target]'), function (cell) {
      cell.style.display = (!only || cell.getAttribute('data-target') === only) ? '' : 'none';
    });
    rows.forEach(function (row) {
      var keep = true, worseFor = listed(row, 'data-worse'), closeFor = listed(row, 'data-close');
      if (disagree.checked && row.getAttribute('data-disagree') !== '1') { keep = false; }
      if (worse.checked && (only ? worseFor.indexOf(only) < 0 : worseFor.length === 0)) { keep = false; }
      if (close.checked && (only ? closeFor.indexOf(only) < 0 : closeFor.length === 0)) { keep = false; }
      if (query && row.textContent.toLowerCase().indexOf(query) < 0) { keep = false; }
      row.style.display = keep ? '' : 'none';
      row.setAttribute('data-shown', keep ? '1' : '0');
      if (keep) { count += 1; }
    });
    shown.textContent = count + ' of ' + rows.length + ' examples shown';
  }
  function fromFragment() {
    var parts = decodeURIComponent(window.location.hash.replace(/^#/, '')).split('&');
    parts.forEach(function (part) {
      var pair = part.split('='), key = pair[0], value = pair.slice(1).join('=');
      if (key === 'disagree') { disagree.checked = true; }
      if (key === 'worse') { worse.checked = true; }
      if (key === 'close') { close.checked = true; }
      if (key === 'target') { target.value = value; }
      if (key === 'q') { search.value = value; }
    });
  }
  [search, disagree, worse, close, target].forEach(function (control) {
    control.addEventListener('input', apply);
    control.addEventListener('change', apply);
  });
  fromFragment();
  apply();
})();"""


def _scores(answer: dict[str, Any]) -> str:
    if answer.get("error"):
        return ""
    return (f"exact {answer.get('exact_match', 0):.0f} · F1 {answer.get('token_f1', 0):.2f} · "
            f"ROUGE-L {answer.get('rouge_l', 0):.2f}")


def _cell(label: str, answer: dict[str, Any]) -> str:
    classes = "t" + (" worse" if answer.get("worse_than_baseline") else "")
    if answer.get("error"):
        body = f"<div class='ans fail'>failed: {html.escape(str(answer['error']))}</div>"
    else:
        body = f"<div class='ans'>{html.escape(answer.get('text') or '')}</div><div class='sc'>{_scores(answer)}</div>"
    if answer.get("close_but_wrong"):
        body += "<span class='flag' title='high overlap with the reference but not an exact match'>close but wrong</span>"
    if answer.get("worse_than_baseline"):
        body += f"<div class='sc'>worse than {html.escape(str(answer.get('baseline')))}</div>"
    return f"<td class='{classes}' data-target='{html.escape(label, quote=True)}'>{body}</td>"


def examples_html(comparison: Comparison) -> str:
    rows = comparison.example_rows()
    labels = [r.label for r in comparison.reports]
    options = "".join(f"<option value='{html.escape(label, quote=True)}'>{html.escape(label)}</option>"
                      for label in labels)
    controls = (
        "<div class='controls'>"
        "<input type='search' id='ex-search' placeholder='search questions, references and answers'>"
        "<label><input type='checkbox' id='ex-disagree'> disagreements only</label>"
        "<label><input type='checkbox' id='ex-worse'> worse than baseline</label>"
        "<label><input type='checkbox' id='ex-close'> close but wrong</label>"
        f"<label>target <select id='ex-target'><option value=''>every target</option>{options}</select></label>"
        f"<span id='ex-shown'>{len(rows)} of {len(rows)} examples shown</span></div>")
    head = "<th>#</th><th>question</th><th>reference</th>" + "".join(
        f"<th data-target='{html.escape(label, quote=True)}'>{html.escape(label)}</th>" for label in labels)
    body = []
    for row in rows:
        answers = row["answers"]
        worse = [label for label in labels if answers[label].get("worse_than_baseline")]
        close = [label for label in labels if answers[label].get("close_but_wrong")]
        attributes = (f"data-index='{row['index'] + 1}' data-disagree='{1 if row['disagreement'] else 0}' "
                      f"data-worse='{html.escape(json.dumps(worse), quote=True)}' "
                      f"data-close='{html.escape(json.dumps(close), quote=True)}'")
        cells = "".join(_cell(label, answers[label]) for label in labels)
        body.append(f"<tr {attributes}><td>{row['index'] + 1}</td><td>{html.escape(row['question'])}</td>"
                    f"<td>{html.escape(row['reference'])}</td>{cells}</tr>")
    return (f"{controls}<table id='examples'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<script>{SCRIPT}</script>")
