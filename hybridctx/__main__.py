from hybridctx.cli import main

main()
