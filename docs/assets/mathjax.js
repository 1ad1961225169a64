// MathJax 3 for pymdownx.arithmatex (generic mode); MathJax itself is copied into the site by
// scripts/docs_hooks.py from the django-static-mathjax package, so nothing is fetched online.
window.MathJax = {
  tex: { inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true, processEnvironments: true },
  options: { ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex" },
};
if (typeof document$ !== "undefined") {
  document$.subscribe(() => { if (window.MathJax.typesetPromise) { MathJax.typesetPromise(); } });
}
