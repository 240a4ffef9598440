"""The command line's commands, one module per group, with the flags they share defined once (cli.flags).

pipeline_runner.py builds the parser from each group's COMMANDS (cli.flags.Command) and
dispatches; a command turns its flags into settings and hands them to the
layers below. Each imports what it needs when it runs, so that --help, submit
and schedule start without loading TensorFlow.
"""
