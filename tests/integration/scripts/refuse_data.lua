-- on_data refuses every message (tests of what follows a refusal)
function on_data(session)
  return 554, "5.7.1 no messages today"
end
