"""`python -m twoclocks.analyze.laws CONFIG [--grid G] [--noise S] [--draws N]`: calibration."""

from twoclocks.analyze.laws.calibrate import main

main()
