"""`make screenshots`: the landing page, the admin's index, and the velocity, delivery and health
pages as a product manager sees them, with the demo's data, in Debian's Chromium; written to
docs/images/.

A throwaway site in a temporary folder (SQLite, its own multiprocess folder), served by
runserver on a free port of 127.0.0.1 and stopped by its PID; nothing is left behind.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
PAGES = {
    "landing": "/",
    "admin-index": "/admin/",
    "velocity": "/reports/velocity/?days=30",
    "delivery": "/reports/delivery/?days=30",
    "health": "/reports/health/",
}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(f"manage.py {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def main() -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("chromium is missing: run scripts/bootstrap.sh (make bootstrap)")
    with tempfile.TemporaryDirectory(prefix="tamma-shots-") as tmp:
        folder = Path(tmp) / "multiproc"
        folder.mkdir()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3",
            "PROMETHEUS_MULTIPROC_DIR": str(folder),
            "DEBUG": "true",  # runserver serves the admin's static files
            "SECRET_KEY": secrets.token_urlsafe(40),
        }
        manage(env, "migrate", "--noinput", "-v0")
        manage(env, "seed_roles")
        manage(env, "seed_demo", "--issues", "1000")
        password = secrets.token_urlsafe(12)
        manage(
            env,
            "shell",
            "-c",
            "from django.contrib.auth.models import Group, User\n"
            f"u = User.objects.create_user('product-manager', password={password!r}, "
            "is_staff=True)\n"
            "u.groups.add(Group.objects.get(name='product-manager'))",
        )
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{base}/", timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        sys.exit("runserver did not start")
                    time.sleep(0.2)
            shoot(chromium, base, password)
        finally:
            os.kill(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


def shoot(chromium: str, base: str, password: str) -> None:
    from playwright.sync_api import sync_playwright

    IMAGES.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        page.goto(f"{base}/admin/login/?next=/admin/")
        page.fill("#id_username", "product-manager")
        page.fill("#id_password", password)
        with page.expect_navigation():
            page.click("input[type=submit]")
        for name, path in PAGES.items():
            page.goto(f"{base}{path}")
            target = IMAGES / f"{name}.png"
            page.screenshot(path=str(target))
            print(f"wrote {target.relative_to(ROOT)}")
        browser.close()


if __name__ == "__main__":
    main()
