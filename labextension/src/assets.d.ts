/** esbuild's text loader (npm run build:player): a stylesheet imported as its source text. */
declare module '*.css' {
  const text: string;
  export default text;
}
