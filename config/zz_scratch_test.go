package config
import "testing"
func TestScratch(t *testing.T){
	c, w, err := Parse(DefaultYAML(), "default.yaml")
	t.Log(w, err)
	t.Log("\n"+c.Policy())
	_, w, err = Parse([]byte("hostname: x\nrelay:\n  netwrks: []\n  networks: [0.0.0.0/0, 10.0.0.0/8]\nlisteners:\n - name: a\n   address: 1.2.3.4:25\n   tls: ssl\n - {name: a, address: 1.2.3.4:25, auth: required, tls: none}\nlimits:\n  max_recipients: many\n  max_errors: -1\n  max_message_size: 12XB\nlog: {format: xml, format: json}\nfilters: {}\n"), "gateway.yaml")
	t.Log(w)
	t.Log("\n"+err.Error())
	_, w, err = Parse(nil, "empty.yaml")
	t.Log("\n"+err.Error())
}
