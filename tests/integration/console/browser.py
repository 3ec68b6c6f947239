"""A headless Chromium for the console tests: Debian's `chromium` and `chromium-driver`.

When the browser is missing and we are root on a Debian-like machine, the session installs
it with apt-get. Without it, the console tests fail under `CI=true` and skip elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = ("chromium", "chromium-driver")


def _present() -> bool:
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


def ensure_chromium() -> None:
    """Installs the browser if it can; fails (CI) or skips (elsewhere) when it cannot."""
    if _present():
        return
    apt = shutil.which("apt-get")
    if apt is not None and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        installed = subprocess.run(
            [apt, "install", "-y", "--no-install-recommends", *PACKAGES],
            env=env,
            capture_output=True,
            timeout=1200,
            check=False,
        )
        if installed.returncode != 0:  # a stale package index: refresh it once
            subprocess.run([apt, "update"], env=env, capture_output=True, timeout=600, check=False)
            subprocess.run(
                [apt, "install", "-y", "--no-install-recommends", *PACKAGES],
                env=env,
                capture_output=True,
                timeout=1200,
                check=False,
            )
    if _present():
        return
    message = (
        f"the console tests need {CHROMIUM} and {CHROMEDRIVER} "
        f"(apt-get install -y {' '.join(PACKAGES)})"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
