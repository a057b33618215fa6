import cytoscape from "cytoscape";
const els=[]; const H=25,U=25,S=20;
for(let h=0;h<H;h++) els.push({data:{id:`h:${h}`}});
for(let u=0;u<U;u++){els.push({data:{id:`u:${u}`}});}
let n=0;
for(let u=0;u<U;u++) for(let s=0;s<S;s++){const id=`s:${u}-${s}`;els.push({data:{id}});els.push({data:{id:`e${n++}`,source:`h:${(u*5+s)%H}`,target:id}});els.push({data:{id:`e${n++}`,source:id,target:`u:${u}`}});}
for (const name of ["breadthfirst","grid","concentric"]) {
const cy=cytoscape({headless:true,styleEnabled:true});
let t=performance.now(); cy.add(els); const add=performance.now()-t;
t=performance.now(); cy.layout({name, directed:true, roots: Array.from({length:H},(_,h)=>`h:${h}`), boundingBox:{x1:0,y1:0,w:1000,h:360}}).run();
console.log(name, "add", add.toFixed(0), "layout", (performance.now()-t).toFixed(0), "ms");
}
