"""mkdocs hooks of the xpo_sim site (named in mkdocs.yml).

* The notebooks (``notebooks/*.ipynb``) and the figures (``figures/*.png``) live at the
  repository root, where the scripts write them and a code host shows them. They join the
  site as ``notebooks/…`` and ``figures/…``; the pages link to them as ``../notebooks/…`` and
  ``../figures/…`` (right on a code host), rewritten here to the site's paths.
* The notebooks execute in quick mode (``XPO_SIM_QUICK=1``) unless the caller set the
  variable: the build stays within minutes.
* The site must work offline: the CDN scripts that nbconvert's template adds to notebook
  pages (MathJax, RequireJS, Mermaid) are dropped — KaTeX, vendored under
  ``docs/assets/katex``, renders every formula — and a page that still loads anything from
  the network is a warning, which ``mkdocs build --strict`` turns into a failure.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {"notebooks": "*.ipynb", "figures": "*.png"}
log = logging.getLogger("mkdocs.hooks.xpo_sim")

CDN_SCRIPT = re.compile(r"<script[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>", re.I)
MATHJAX_CONFIG = re.compile(r"<script type=\"text/x-mathjax-config\">.*?</script>", re.S)
NETWORK = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//[^\"]*\"", re.I)
REPO_LINK = re.compile(r"\]\(\.\./((?:\.\./)*)(notebooks|figures)/")


def on_config(config, **kwargs):
    os.environ.setdefault("XPO_SIM_QUICK", "1")
    return config


@event_priority(100)  # before mkdocs-jupyter turns the .ipynb files into pages
def on_files(files, config, **kwargs):
    for folder, pattern in SHIPPED.items():
        for path in sorted((ROOT / folder).glob(pattern)):
            files.append(File(f"{folder}/{path.name}", src_dir=str(ROOT), dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files, **kwargs):
    # one "../" less: in the site, notebooks/ and figures/ sit beside the pages, not above docs/
    return REPO_LINK.sub(lambda m: f"]({m.group(1)}{m.group(2)}/", markdown)


def on_post_page(output, page, config, **kwargs):
    output = MATHJAX_CONFIG.sub("", CDN_SCRIPT.sub("", output))
    for match in NETWORK.finditer(output):
        log.warning("%s loads %s from the network; the site must work offline", page.file.src_uri, match.group(0))
    return output
