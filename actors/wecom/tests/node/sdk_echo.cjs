// Tencent's official AI-bot SDK (@wecom/aibot-node-sdk) pointed at the wecom-edge simulator:
// authenticate, take one pushed text message, stream two frames back, exit 0.
// Usage: node sdk_echo.cjs WS_URL BOT_ID SECRET   (NODE_PATH points at the installed SDK)
const AiBot = require('@wecom/aibot-node-sdk');
const [wsUrl, botId, secret] = process.argv.slice(2);
const quiet = { debug() {}, info() {}, warn: console.error, error: console.error };
const client = new AiBot.WSClient({ botId, secret, wsUrl, logger: quiet, maxReconnectAttempts: 0 });
client.on('authenticated', () => console.log('AUTHENTICATED'));
client.on('message.text', async (frame) => {
  const content = frame.body.text.content;
  const streamId = AiBot.generateReqId('stream');
  try {
    await client.replyStream(frame, streamId, 'thinking', false);
    await client.replyStream(frame, streamId, `echo: ${content}`, true);
    console.log(`REPLIED ${frame.headers.req_id}`);
    client.disconnect();
    process.exit(0);
  } catch (e) {
    console.error('reply failed', e);
    process.exit(3);
  }
});
client.on('error', (e) => console.error('sdk error', e && e.message));
client.connect();
setTimeout(() => { console.error('timed out'); process.exit(4); }, 30000);
