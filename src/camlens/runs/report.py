"""``report.html``: a static report of a run folder that opens fast at 50,000 rows.

The page is a fixed shell (summary, controls, an empty grid) plus ``report-data.js``, the run's
rows in columns with repeated strings stored once. The browser draws one page of thumbnails at a
time (lazy-loaded images), so the number of rows costs memory for their text only. The summary:
images, methods, accuracy where true labels are known, predictions per class, a confidence
histogram and the failures. Filters: method, predicted class, true class, mistakes only,
confidence range; sort by confidence or name. The page is one static folder: no server, no
network. Nothing from the data is parsed as HTML: the shell is escaped Python output and the
script inserts text with ``textContent`` and links percent-encoded in Python.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from camlens.runs.durable import write_bytes
from camlens.runs.row import REPORT_COLUMNS

_STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f4;color:#222}
header{background:#222;color:#fff;padding:12px 20px}
header h1{margin:0;font-size:20px}
.summary{display:flex;gap:14px;flex-wrap:wrap;padding:14px 20px}
.stat{background:#fff;border-radius:6px;padding:10px 14px;box-shadow:0 1px 3px #0002;
  min-width:150px}
.stat b{display:block;font-size:22px}
.chart{background:#fff;border-radius:6px;padding:10px 14px;box-shadow:0 1px 3px #0002}
.chart h2{font-size:13px;margin:0 0 6px;font-weight:600}
.bars{display:flex;align-items:flex-end;gap:2px;height:80px}
.bars div{background:#3a78c2;width:16px;min-height:1px}
.classes td{font-size:12px;padding:1px 6px}
.classes .bar{background:#3a78c2;height:10px}
.controls{padding:6px 20px;display:flex;gap:14px;align-items:center;flex-wrap:wrap;
  position:sticky;top:0;background:#f4f4f4;border-bottom:1px solid #ddd;z-index:1}
.controls label{font-size:13px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px;
  padding:12px 20px}
.card{background:#fff;border-radius:6px;padding:8px;box-shadow:0 1px 3px #0002}
.card.wrong{outline:2px solid #d33}
.pair{display:flex;gap:6px}
.pair figure{margin:0;flex:1;text-align:center}
.pair img{width:100%;height:150px;object-fit:contain;background:#ddd;display:block}
.pair figcaption{font-size:11px;color:#555}
.card p{margin:4px 0 0;font-size:12px;word-break:break-all}
.pager{padding:0 20px 20px;display:flex;gap:10px;align-items:center}
.failures{margin:0 20px 20px;background:#fff3f3;border-radius:6px;padding:10px}
.failures li{word-break:break-all;font-size:13px}
"""

_SCRIPT = r"""
(function(){
  var D=window.CAMLENS_RUN, n=D.path.length, S=D.strings, PER=48;
  function s(col,i){var v=D[col][i];return v<0?null:S[v];}
  var el=function(id){return document.getElementById(id);};
  var grid=el('grid'), page=0, shown=[];
  function option(select,value,text){var o=document.createElement('option');
    o.value=value;o.textContent=text;select.appendChild(o);}
  function fill(select,col){var seen={};for(var i=0;i<n;i++){var v=s(col,i);
    if(v!==null&&!(v in seen)){seen[v]=1;}}
    Object.keys(seen).sort(function(a,b){return a.localeCompare(b);})
      .forEach(function(v){option(select,v,v);});}
  fill(el('method'),'method'); fill(el('predicted'),'predicted_name');
  fill(el('truth'),'true_name');
  if(el('method').options.length>1){el('method').selectedIndex=1;}
  function apply(){
    var m=el('method').value,p=el('predicted').value,t=el('truth').value;
    var wrong=el('wrong').checked;
    var lo=parseFloat(el('lo').value)/100, hi=parseFloat(el('hi').value)/100;
    shown=[];
    for(var i=0;i<n;i++){
      if(m&&s('method',i)!==m)continue; if(p&&s('predicted_name',i)!==p)continue;
      if(t&&s('true_name',i)!==t)continue; if(wrong&&D.correct[i]!==0)continue;
      var q=D.probability[i]; if(q<lo||q>hi)continue; shown.push(i);}
    var how=el('sort').value;
    shown.sort(function(a,b){
      if(how==='name'){return s('name',a).localeCompare(s('name',b));}
      var d=D.probability[a]-D.probability[b]; return how==='asc'?d:-d;});
    page=0; draw();}
  function figure(src,caption){
    var f=document.createElement('figure'),im=document.createElement('img');
    im.loading='lazy';im.src=src;im.alt=caption;var c=document.createElement('figcaption');
    c.textContent=caption;f.appendChild(im);f.appendChild(c);return f;}
  function draw(){
    var pages=Math.max(1,Math.ceil(shown.length/PER)); page=Math.min(Math.max(page,0),pages-1);
    grid.textContent='';
    shown.slice(page*PER,page*PER+PER).forEach(function(i){
      var card=document.createElement('section');
      card.className='card'+(D.correct[i]===0?' wrong':'');
      var pair=document.createElement('div');pair.className='pair';
      pair.appendChild(figure(s('image',i),'original'));
      var where=s('layer',i)?' at '+s('layer',i):'';
      pair.appendChild(figure(s('overlay',i),s('method',i)+where));
      card.appendChild(pair);
      var text=s('name',i)+': predicted '+s('predicted_name',i)+' '+
        (100*D.probability[i]).toFixed(1)+'%';
      if(s('true_name',i)!==null){text+=' \u00b7 true '+s('true_name',i);}
      var aim=s('target_name',i);
      if(aim!==null&&aim!==s('predicted_name',i)){text+=' \u00b7 explains '+aim;}
      var p=document.createElement('p');p.textContent=text;p.title=s('path',i);card.appendChild(p);
      grid.appendChild(card);});
    el('count').textContent=shown.length+' of '+n+' rows';
    el('page').textContent='page '+(page+1)+' of '+pages;}
  ['method','predicted','truth','wrong','sort','lo','hi'].forEach(function(id){
    el(id).addEventListener('change',apply);});
  function turn(step){page+=step;draw();el('grid').scrollIntoView();}
  el('prev').addEventListener('click',function(){turn(-1);});
  el('next').addEventListener('click',function(){turn(1);});
  apply();
})();
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _link(out: Path, row: Any) -> str:
    """A percent-encoded relative link from the report to the row's image (the copy if any)."""
    copy = row.get("image")
    target = copy if isinstance(copy, str) and copy else os.path.relpath(row["path"], out)
    return quote(str(target).replace(os.sep, "/"), safe="/")


def run_data(out: Path, rows: Any) -> dict[str, Any]:
    """The explained rows as columns for the page: strings as indices into one table."""
    explained = rows[rows["error"].isna()]
    table: dict[str, int] = {}
    columns: dict[str, list[Any]] = {c: [] for c in REPORT_COLUMNS}

    def index(value: Any) -> int:
        if value is None or (isinstance(value, float) and value != value):
            return -1
        return table.setdefault(str(value), len(table))

    for row in explained.to_dict("records"):
        row["name"] = Path(row["path"]).name
        row["image"] = _link(out, row)
        row["overlay"] = quote(str(row["overlay"]), safe="/")
        for column in REPORT_COLUMNS:
            columns[column].append(index(row.get(column)))
    correct = explained["correct"].astype("Int64").fillna(-1)
    return {
        **columns,
        "strings": list(table),
        "probability": [round(float(v), 4) for v in explained["probability"]],
        "correct": [int(v) for v in correct],
    }


def _summary(rows: Any, info: dict[str, Any]) -> str:
    explained = rows[rows["error"].isna()]
    images = explained.drop_duplicates("path")
    stats = [("images", f"{len(images):,}"), ("methods", ", ".join(info.get("methods", [])))]
    known = images[images["correct"].notna()]
    if len(known):
        accuracy = known["correct"].astype(bool).mean()
        stats.append(("accuracy", f"{accuracy * 100:.1f}% of {len(known):,}"))
    failures = int(rows["error"].notna().sum())
    stats.append(("failed inputs", f"{failures:,}"))
    boxes = "".join(f'<div class="stat">{_e(k)}<b>{_e(v)}</b></div>' for k, v in stats)
    counts = images["predicted_name"].value_counts().head(15)
    top = max(int(counts.max()), 1) if len(counts) else 1
    lines = "".join(
        f"<tr><td>{_e(name)}</td><td>{int(count)}</td><td>"
        f'<div class="bar" style="width:{int(120 * count / top)}px"></div></td></tr>'
        for name, count in counts.items()
    )
    classes = (
        '<div class="chart"><h2>Predictions per class (top 15)</h2>'
        f'<table class="classes">{lines}</table></div>'
    )
    histogram = [0] * 10
    for value in images["probability"].dropna():
        histogram[min(int(float(value) * 10), 9)] += 1
    high = max(max(histogram), 1)
    bars = "".join(
        f'<div title="{i * 10}-{i * 10 + 10}%: {c}" style="height:{int(80 * c / high)}px"></div>'
        for i, c in enumerate(histogram)
    )
    confidence = (
        '<div class="chart"><h2>Confidence of the prediction (0 to 100%)</h2>'
        f'<div class="bars">{bars}</div></div>'
    )
    return f'<section class="summary">{boxes}{classes}{confidence}</section>'


def render_html(rows: Any, info: dict[str, Any], title: str = "camlens report") -> str:
    """The report page's shell for a run's rows (a DataFrame) and its manifest."""
    failed = rows[rows["error"].notna()]
    failures = ""
    if len(failed):
        items = "".join(
            f"<li><code>{_e(path)}</code>: {_e(reason)}</li>"
            for path, reason in zip(failed["path"], failed["error"])
        )
        failures = (
            f'<section class="failures"><h2>{len(failed)} input(s) skipped</h2>'
            f"<ul>{items}</ul></section>"
        )
    controls = (
        '<div class="controls">'
        '<label>Method <select id="method"><option value="">all</option></select></label>'
        '<label>Predicted <select id="predicted"><option value="">all</option></select></label>'
        '<label>True class <select id="truth"><option value="">all</option></select></label>'
        '<label><input type="checkbox" id="wrong"> mistakes only</label>'
        '<label>Confidence <input id="lo" type="number" min="0" max="100" value="0" size="3">'
        ' to <input id="hi" type="number" min="0" max="100" value="100" size="3"> %</label>'
        '<label>Sort <select id="sort"><option value="desc">confidence, high to low</option>'
        '<option value="asc">confidence, low to high</option>'
        '<option value="name">file name</option></select></label>'
        '<span id="count"></span></div>'
    )
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_STYLE}</style></head><body>"
        f"<header><h1>{_e(title)}</h1></header>"
        f"{_summary(rows, info)}{failures}{controls}"
        '<main class="grid" id="grid"></main>'
        '<nav class="pager"><button id="prev" type="button">previous</button>'
        '<span id="page"></span><button id="next" type="button">next</button></nav>'
        '<script src="report-data.js"></script>'
        f"<script>{_SCRIPT}</script></body></html>\n"
    )


def write_report(out: Path, rows: Any, info: dict[str, Any], title: str = "camlens report") -> Path:
    """Write ``out/report.html`` and ``out/report-data.js``; returns the page's path."""
    out = Path(out)
    data = json.dumps(run_data(out, rows), separators=(",", ":")).replace("</", "<\\/")
    write_bytes(out / "report-data.js", f"window.CAMLENS_RUN={data};\n".encode())
    file = out / "report.html"
    write_bytes(file, render_html(rows, info, title).encode())
    return file
