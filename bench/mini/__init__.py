"""The mini reproduction: the paper's claims checked on real digits with models trained here on a CPU.

    config.py   the recipe (data, model, budgets) and the cache key
    build.py    the trained artifacts, cached: digit classifier, DiT, DyDiTs (through dydit.train); a row's model
    evaluate.py one model measured: sampling, mini-FID, accuracy, FLOPs ratio, redundancy, figures' data
    run.py      one suite run: everything measured once, shared by the cells (bench/measure/mini.py)
    figures.py  matplotlib figures

Its report sections are bench/sections/mini.py and bench/sections/scaling_mini.py.
"""
