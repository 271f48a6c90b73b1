// MathJax settings, read by assets/mathjax/tex-chtml-full.js (loaded right after this file; the
// hook docs/hooks/offline_math.py copies it into the site from the django-static-mathjax package).
//
// pymdownx.arithmatex (generic mode) writes inline math as <span class="arithmatex">\(...\)</span>
// and display math as <div class="arithmatex">\[...\]</div>. MathJax is told to look only inside
// those elements, so a "\(" or "$" elsewhere on a page (in code, say) is left alone. The fonts
// come from output/chtml/fonts/woff-v2/ next to the script (MathJax's default), i.e. from the site.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
    // Without "noundefined" a misspelt macro is a TeX error, shown boxed, that tests/test_site.py
    // reports, rather than the macro's name quietly printed in red.
    packages: { "[-]": ["noundefined"] },
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};
