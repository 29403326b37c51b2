"""Nightcrawler: action recognition in extremely dark videos (UG2+ 2022 Track 2, 2nd place method)."""

from setuptools import find_packages, setup

# Versions the test suite runs against (scripts/setup.sh installs exactly these).
INSTALL_REQUIRES = [
    "torch==2.14.1",
    "torchvision==0.29.1",
    "fvcore==0.1.5.post20221221",
    "iopath==0.1.10",
    "yacs==0.1.8",
    "av==18.1.0",
    "decord==0.6.0",
    "simplejson==4.3.0",
    "pandas==3.1.1",
    "numpy==2.4.6",
    "timm==1.0.31",
    "tensorboard==2.21.0",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",
    "PyYAML==6.0.4",
    "kornia==0.9.0",  # the clahe enhancement (kornia.enhance.equalize_clahe)
    "torchcodec==0.17.0",  # optional backend: needs FFmpeg's shared libraries (scripts/setup.sh installs them)
]
EXTRAS = {
    # setuptools: tests/tools/test_install.py builds the wheel without build isolation (bdist_wheel built in)
    "dev": ["pytest==9.2.0", "ruff==0.17.6", "scikit-video==1.1.11", "setuptools==84.2.1"],
}

# The console scripts: the pseudo-label stages, threshold search and vote of nightcrawler/pseudo/cli.py, and
# prediction on new videos. The training launcher and the other tools stay scripts of the checkout (tools/*.py).
CONSOLE_SCRIPTS = [
    "nightcrawler-predict = nightcrawler.inference.cli:main",
    *(f"nightcrawler-pseudo-stage{k} = nightcrawler.pseudo.cli:stage{k}_main" for k in (1, 2, 3, 4)),
    "nightcrawler-search-thresholds = nightcrawler.pseudo.cli:search_main",
    "nightcrawler-ensemble-vote = nightcrawler.pseudo.cli:vote_main",
]

setup(
    name="nightcrawler",
    version="0.1.0",
    description=__doc__,
    # configs/ ships inside the package as nightcrawler/configs (found by nightcrawler.resources.configs_root)
    packages=[*find_packages(include=["nightcrawler", "nightcrawler.*"]), "nightcrawler.configs"],
    package_dir={"nightcrawler.configs": "configs"},
    package_data={"nightcrawler.configs": ["**/*.yaml"]},
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
