-- on_connect refuses every client (tests of what a refused session takes)
function on_connect(session)
  return 554, "not you"
end
