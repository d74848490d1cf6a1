"""Commands for trying sessionstore on one machine, apart from the operator commands.

``sessionstore dev`` (`command`): a whole fleet (Redis, replicas, a worker)
run by the process supervisor of `sessionstore.testing`, with a demo breaker
(`breakers`) tripped through the demo route (`demo_routes`, mounted only
where the dev fleet asks for it); ``sessionstore demo`` (`demo`): a scripted
tour of the store on a private Redis.
"""
