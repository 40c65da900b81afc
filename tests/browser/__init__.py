"""Tests in a real browser: Debian's headless chromium driven by Selenium (installed by scripts/browser-deps)."""
