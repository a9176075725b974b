from lossbench.cli import main

main(prog_name="lossbench")
