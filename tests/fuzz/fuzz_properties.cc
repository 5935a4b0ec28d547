// config.properties: the java.util.Properties parser, $$VAR$$ expansion, and the whole
// server configuration built from the file (every key's validation), as tserve --ts-config
// does at startup.
#include <map>
#include <string>
#include <string_view>

#include "config/properties.h"
#include "config/server_config.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto props = tserve::ParseProperties(text);
  if (props.ok()) {
    const std::map<std::string, std::string> env = {{"HOME", "/home/x"}, {"PORT", "8080"}};
    for (const auto& p : props.value()) {
      TSERVE_FUZZ_CHECK(p.line >= 1);
      (void)tserve::ExpandEnvReferences(p.value, env);
    }
  }
  tserve::ConfigInputs inputs;
  inputs.properties_text = std::string(text);
  inputs.properties_path = "/etc/tserve/config.properties";
  inputs.env = {{"HOME", "/home/x"}, {"PORT", "8080"}};
  auto loaded = tserve::LoadServerConfig(inputs);
  if (!loaded.ok()) TSERVE_FUZZ_CHECK(!loaded.status().message().empty());
  return 0;
}
