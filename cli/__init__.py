"""The command line's commands, one module per group, with the flags they share defined once (cli.flags).

pipeline_runner.py builds the parser from each group's commands (cli.flags.Command:
a module's COMMANDS, or cli.deploy.commands() for the deployment targets) and
dispatches; a command turns its flags into settings and hands them to the
layers below. Each imports what it needs when it runs, so that --help, submit
and schedule start without loading TensorFlow. The commands are the code that
prints: the layers below hand them their lines (a `say`, as
orchestration.run.lifecycle's) or log, and raise contract.errors.CommandError for
what the user must hear as an error.
"""
