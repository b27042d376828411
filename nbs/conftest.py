"pytest hooks for running the notebooks under nbval"


def pytest_collection_modifyitems(items):
    "Treat the committed outputs as nbval's reference outputs"
    # nbdev-clean blanks every execution count, and nbval takes a cell without one for an unrun cell that
    # should not have outputs ("Unrun reference cell has outputs").
    for item in items:
        cell = getattr(item, 'cell', None)
        if cell is not None and cell.get('execution_count') is None and cell.get('outputs'):
            cell['execution_count'] = 1
