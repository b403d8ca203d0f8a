// The daemon as a production install or the image runs it: the compiled dist/ (built by the bench
// first), not the TypeScript sources through tsx, whose loader thread alone adds tens of MB of RSS.
const { main } = await import(new URL('../../dist/cli.js', import.meta.url).href);
await main(process.argv);
