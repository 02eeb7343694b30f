"""Research and peer-check scripts: they make the tables under ``results/``; not part of the installed package."""
