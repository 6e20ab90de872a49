from widecli.cli import main

main()
